"""Spring Kafka reads our dead letters, and we read Spring's: the real code on both sides.

ops/spring-dlt-check is a Java 17 program on spring-kafka 4.0.7 (from Maven Central):
`read` runs a Spring `@KafkaListener` on a DLQ topic whose parameters are the
`kafka_dlt-*` headers (Spring's header mapper and converters do the decoding, see
events.core.headers); `write` dead-letters a record with Spring's
DeadLetterPublishingRecoverer. Maven builds it into a temporary directory, offline when
the local repository has everything (infra/bootstrap.sh fetches it there).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.core import headers as dl
from events.core.conf import PipelineSettings
from events.core.kafka import Message
from events.core.topics import delete_topics_with_prefix
from events.dead_letters.rows import dead_letter_from_message
from events.models import FailedAttempt
from tests.effects.event_types import TestPinged
from tests.events.dead_letter_helpers import legacy_dead_letter_headers, read_all
from tests.events.pipeline import running_consumer, send_events, send_raw
from tests.kafka_helpers import make_topic
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "ops/spring-dlt-check"
MAIN_CLASS = "local.ops.springdltcheck.SpringDltCheck"


@pytest.fixture(scope="module")
def spring_check(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Build ops/spring-dlt-check; return the command that runs it."""
    build = tmp_path_factory.mktemp("spring-dlt-check")
    maven = ["mvn", "-q", "-B", "-f", str(CHECK / "pom.xml")]
    goal = ["package", f"-Dbuild.dir={build}"]
    done = subprocess.run(
        [*maven, "-o", *goal], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        # A Maven repository that lacks something (infra/bootstrap.sh fetches it all).
        done = subprocess.run(
            [*maven, *goal], capture_output=True, text=True, timeout=600
        )
    assert done.returncode == 0, f"mvn package failed:\n{done.stdout}{done.stderr}"
    classpath = os.pathsep.join([str(build / "spring-dlt-check.jar"), f"{build}/lib/*"])
    return ["java", "-cp", classpath, MAIN_CLASS]


@pytest.fixture
def own_topics(fresh_topics: PipelineSettings) -> Iterator[PipelineSettings]:
    """This test's topics (every pipeline topic under a prefix), deleted afterwards."""
    yield fresh_topics
    delete_topics_with_prefix(fresh_topics.topic_prefix)


def run_spring(command: list[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode not in (0, 2):
        raise AssertionError(f"spring-dlt-check failed:\n{done.stdout}{done.stderr}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines


def spring_read(
    command: list[str], conf: PipelineSettings, topic: str, count: int
) -> dict[tuple[int, int], dict[str, Any]]:
    """What Spring's listener made of each record of `topic`, by (partition, offset)."""
    status, lines = run_spring(
        command,
        "read",
        "--bootstrap",
        conf.bootstrap_servers,
        "--topic",
        topic,
        "--group",
        f"{conf.topic_prefix}spring-{uuid.uuid4().hex[:6]}",
        "--count",
        str(count),
        "--timeout-ms",
        "45000",
    )
    assert status == 0, f"Spring read {len(lines)} of {count} records: {lines}"
    return {(line["dlt_partition"], line["dlt_offset"]): line for line in lines}


def raw(message: Message) -> dict[str, bytes | None]:
    return dl.raw_header_map(message.headers())


def test_spring_reads_the_dead_letter_of_a_real_consumer_run_as_we_wrote_it(
    own_topics: PipelineSettings, spring_check: list[str]
) -> None:
    topic = own_topics.topic("reservation")
    dlq = own_topics.dlq_topic("reservation")
    [event_id] = send_events(TestPinged(ping_id="spring", mode="fail", key_id="K"))
    with running_consumer() as runner:
        wait_until(
            lambda: FailedAttempt.objects.filter(
                event_id=event_id, outcome="dead_lettered"
            ).exists(),
            what="the dead letter",
        )
        group = runner.group_id
    [source] = [
        m
        for m in read_all(topic, expected=1)
        if raw(m).get(dl.EVENT_ID) == event_id.encode()
    ]
    # Beside it, a dead letter in the old ASCII encoding: Spring must not read that one.
    old_origin = dl.Origin(topic, 3, 41, 1_700_000_000_123)
    old_headers = legacy_dead_letter_headers(
        old_origin,
        group=group,
        handler="old.handler",
        message="old boom",
        event_id=str(uuid.uuid4()),
    )
    send_raw(dlq, key=b"K", value=b"{}", headers=old_headers)
    letters = read_all(dlq, expected=2)
    [ours] = [m for m in letters if raw(m).get(dl.EVENT_ID) == event_id.encode()]
    [old] = [m for m in letters if m is not ours]

    seen = spring_read(spring_check, own_topics, dlq, count=2)

    wrote = raw(ours)
    assert seen[(ours.partition(), ours.offset())] == {
        "dlt_topic": dlq,
        "dlt_partition": ours.partition(),
        "dlt_offset": ours.offset(),
        "original_topic": topic,
        "original_partition": source.partition(),
        "original_offset": source.offset(),
        "original_timestamp": source.timestamp()[1],
        "original_timestamp_type": "CreateTime",
        "original_consumer_group": group,
        "exception_fqcn": "builtins.RuntimeError",
        "exception_cause_fqcn": "builtins.RuntimeError",
        "exception_message": "ping spring always fails",
        "exception_stacktrace": (wrote[dl.DLT_EXCEPTION_STACKTRACE] or b"").decode(),
    }
    # Spring's int converter wants 4 bytes; the old partition header is "3", one byte.
    refused = seen[(old.partition(), old.offset())]
    assert "At least 4 bytes needed to convert a byte[] to an integer" in refused.get(
        "error", ""
    ), refused

    # Our store reads both generations.
    row = dead_letter_from_message(ours)
    assert (row.original_topic, row.original_partition, row.original_offset) == (
        topic,
        source.partition(),
        source.offset(),
    )
    assert row.original_timestamp is not None
    assert int(row.original_timestamp.timestamp() * 1000) == source.timestamp()[1]
    assert (row.attempts, row.consumer_group) == (3, group)
    assert row.handler == "tests.effects.handlers.record_ping"
    old_row = dead_letter_from_message(old)
    assert (old_row.original_partition, old_row.original_offset) == (3, 41)
    assert old_row.original_timestamp is not None
    assert int(old_row.original_timestamp.timestamp() * 1000) == 1_700_000_000_123
    assert (old_row.attempts, old_row.handler) == (3, "old.handler")
    assert old_row.last_failed_at is not None


def test_spring_writes_the_bytes_we_write_and_we_read_what_spring_writes(
    own_topics: PipelineSettings, spring_check: list[str]
) -> None:
    dlt = make_topic(f"{own_topics.topic_prefix}spring-written-dlt", partitions=1)
    origin = dl.Origin("orders", 2, 41, 1_700_000_000_123)
    status, lines = run_spring(
        spring_check,
        "write",
        "--bootstrap",
        own_topics.bootstrap_servers,
        "--topic",
        dlt,
        "--source-topic",
        origin.topic,
        "--source-partition",
        str(origin.partition),
        "--source-offset",
        str(origin.offset),
        "--source-timestamp",
        str(origin.timestamp_ms),
        "--group",
        "reservations",
        "--message",
        "boom",
    )
    assert (status, lines) == (0, [{"written": dlt}])
    [spring] = read_all(dlt, expected=1)
    springs = [
        (k, v) for k, v in spring.headers() or [] if k.startswith(dl.SPRING_DLT_PREFIX)
    ]
    ours = [
        (k, v)
        for k, v in dl.dead_letter_headers(
            [],
            origin=origin,
            handler="h",
            attempts=1,
            group="reservations",
            error=RuntimeError("boom"),
        )
        if k.startswith(dl.SPRING_DLT_PREFIX)
    ]
    # The same names in the same order, and the same bytes wherever the content is not
    # the exception itself (a Java one there, a Python one here).
    assert [k for k, _ in springs] == [k for k, _ in ours]
    coordinates = {
        dl.DLT_ORIGINAL_TOPIC,
        dl.DLT_ORIGINAL_PARTITION,
        dl.DLT_ORIGINAL_OFFSET,
        dl.DLT_ORIGINAL_TIMESTAMP,
        dl.DLT_ORIGINAL_TIMESTAMP_TYPE,
        dl.DLT_ORIGINAL_CONSUMER_GROUP,
    }
    assert {k: v for k, v in springs if k in coordinates} == {
        k: v for k, v in ours if k in coordinates
    }

    row = dead_letter_from_message(spring)
    assert (row.original_topic, row.original_partition, row.original_offset) == (
        "orders",
        2,
        41,
    )
    assert row.original_timestamp is not None
    assert int(row.original_timestamp.timestamp() * 1000) == 1_700_000_000_123
    assert row.consumer_group == "reservations"
    assert (
        row.error_class
        == "org.springframework.kafka.listener.ListenerExecutionFailedException"
    )
    assert row.error_message == "Listener failed; boom"
    assert "java.lang.IllegalStateException: boom" in row.traceback
    assert (row.attempts, row.handler) == (0, "")
