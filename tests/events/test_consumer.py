"""Guarantees 4, 5 and 7 against the real broker and database."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import pytest

from events.core import headers as dl
from events.core.kafka import TopicPartition, build_consumer
from events.models import (
    ConsumerLag,
    FailedAttempt,
    InboxDuplicateCount,
    InboxEntry,
)
from tests.conftest import child_env
from tests.effects.event_types import TestBatched, TestOrdered, TestPinged
from tests.effects.handlers import batch_calls, failures
from tests.effects.models import Effect
from tests.events.pipeline import (
    process_log,
    running_consumer,
    send_events,
    send_raw,
    start_consumer_process,
)
from tests.kafka_helpers import header, read_topic
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def effects(ping_id: str) -> int:
    return Effect.objects.filter(ping_id=ping_id).count()


def test_a_duplicate_delivery_has_one_effect(fresh_topics) -> None:
    topic = fresh_topics.topic("reservation")
    envelope = {
        "id": "6f1c1d4e-1111-4c8e-9c55-0123456789ab",
        "type": "TestPinged",
        "version": 1,
        "occurred_at": "2026-11-25T12:00:00+00:00",
        "aggregate_type": "test",
        "aggregate_id": "dup",
        "data": {"ping_id": "dup"},
    }
    for _ in range(2):
        send_raw(topic, key=b"dup", value=json.dumps(envelope).encode())
    send_events(TestPinged(ping_id="after-dup", key_id="dup"))

    with running_consumer():
        wait_until(
            lambda: effects("after-dup") == 1, what="the event after the duplicate"
        )
    assert effects("dup") == 1
    assert InboxEntry.objects.filter(event_id=envelope["id"]).count() == 1
    absorbed = InboxDuplicateCount.objects.get()
    assert (absorbed.handler, absorbed.count) == (
        "tests.effects.handlers.record_ping",
        1,
    )


def test_a_handler_that_keeps_breaking_its_connection_gives_up_after_the_limit(
    fresh_topics,
) -> None:
    """Blamed on the database five times, then the handler's own failure: it goes to
    the retry topic instead of stalling its partitions forever."""
    from events.consumer.database_faults import DATABASE_FAULT_LIMIT

    [event_id] = send_events(
        TestPinged(
            ping_id="culprit", mode="lose-db", fail_times=DATABASE_FAULT_LIMIT + 1
        )
    )
    with running_consumer():
        wait_until(lambda: effects("culprit") == 1, timeout=60, what="handled at last")

    assert failures["culprit"] == DATABASE_FAULT_LIMIT + 1
    attempt = FailedAttempt.objects.get(event_id=event_id)
    assert (attempt.attempt, attempt.outcome) == (1, "retry_scheduled")
    assert InboxEntry.objects.get(event_id=event_id).attempt == 2


def test_flaky_handler_is_processed_once_after_two_retries(fresh_topics) -> None:
    [event_id] = send_events(TestPinged(ping_id="flaky", mode="flaky", fail_times=2))
    with running_consumer():
        wait_until(lambda: effects("flaky") == 1, timeout=30, what="third attempt")
    attempts = list(
        FailedAttempt.objects.filter(event_id=event_id)
        .order_by("attempt")
        .values_list("attempt", "outcome", "exception_class")
    )
    assert attempts == [
        (1, "retry_scheduled", "builtins.ConnectionError"),
        (2, "retry_scheduled", "builtins.ConnectionError"),
    ]
    inbox = InboxEntry.objects.get(event_id=event_id)
    assert inbox.attempt == 3
    assert inbox.topic == fresh_topics.retry_topic("reservation", 2)
    assert effects("flaky") == 1


@pytest.mark.parametrize("mode", ["lose-db", "deadlock"])
def test_a_database_fault_under_a_handler_is_not_the_events_fault(
    fresh_topics, mode
) -> None:
    """A lost connection or a deadlock: the batch is consumed again, with no retry
    topic (which would put the event behind later ones of its key), no dead letter,
    one effect."""
    ids = send_events(
        TestPinged(ping_id="before", key_id="K"),
        TestPinged(ping_id=f"cut-{mode}", key_id="K", mode=mode, fail_times=2),
        TestPinged(ping_id="after", key_id="K"),
    )
    with running_consumer():
        wait_until(lambda: effects("after") == 1, timeout=30, what="all three handled")

    assert [effects(p) for p in ("before", f"cut-{mode}", "after")] == [1, 1, 1]
    assert failures[f"cut-{mode}"] == 2  # the fault did happen, twice
    assert not FailedAttempt.objects.exists()
    handled = InboxEntry.objects.filter(event_id__in=ids).order_by("id")
    assert [str(e.event_id) for e in handled] == ids
    assert {e.topic for e in handled} == {fresh_topics.topic("reservation")}


def test_failing_handler_dead_letters_once_with_every_header_and_others_flow(
    fresh_topics,
) -> None:
    topic = fresh_topics.topic("reservation")
    [bad_id, *_] = send_events(
        TestPinged(ping_id="doomed", mode="fail", key_id="K"),
        *[TestPinged(ping_id=f"next-{i}", key_id="K") for i in range(5)],
    )
    with running_consumer() as runner:
        wait_until(
            lambda: all(effects(f"next-{i}") == 1 for i in range(5)),
            what="later events on the partition",
        )
        wait_until(
            lambda: FailedAttempt.objects.filter(
                event_id=bad_id, outcome="dead_lettered"
            ),
            what="the dead letter",
        )
        group = runner.group_id
    # The later events did not wait for the doomed one's retries: they were all done
    # before its first retry was due (compared on the database's records, not on how
    # fast this machine happened to be).
    first_retry = FailedAttempt.objects.get(event_id=bad_id, attempt=1)
    later_done = Effect.objects.filter(ping_id__startswith="next-")
    assert max(e.created_at for e in later_done) < first_retry.next_attempt_at
    [letter] = read_topic(fresh_topics.dlq_topic("reservation"), expected=1, timeout=10)
    assert header(letter, "event_id") == bad_id
    assert letter.key() == b"K"
    assert json.loads(letter.value())["data"]["ping_id"] == "doomed"
    raw = dl.raw_header_map(letter.headers())
    assert header(letter, dl.DLT_ORIGINAL_TOPIC) == topic
    assert len(raw[dl.DLT_ORIGINAL_PARTITION]) == 4  # Spring's int, big-endian
    assert raw[dl.DLT_ORIGINAL_OFFSET] == bytes(8)  # Spring's long: offset 0
    assert dl.decode_int(raw[dl.DLT_ORIGINAL_TIMESTAMP], 8) > 0
    assert header(letter, dl.DLT_ORIGINAL_TIMESTAMP_TYPE) == "CreateTime"
    assert header(letter, dl.DLT_ORIGINAL_CONSUMER_GROUP) == group
    assert header(letter, dl.DLT_EXCEPTION_CAUSE_FQCN) == "builtins.RuntimeError"
    assert header(letter, dl.DLT_EXCEPTION_FQCN) == "builtins.RuntimeError"
    assert header(letter, dl.DLT_EXCEPTION_MESSAGE) == "ping doomed always fails"
    assert "RuntimeError" in header(letter, dl.DLT_EXCEPTION_STACKTRACE)
    assert header(letter, dl.DLT_ATTEMPTS) == "3"
    assert header(letter, dl.DLT_HANDLER) == "tests.effects.handlers.record_ping"
    assert int(header(letter, dl.DLT_FAILED_AT)) > 0
    assert dl.LEGACY_DLT_ATTEMPTS not in raw, "our extras under Spring's prefix"
    assert header(letter, dl.RETRY_HANDLER) is None, "retry bookkeeping leaked"
    assert effects("doomed") == 0
    outcomes = FailedAttempt.objects.filter(event_id=bad_id).order_by("attempt")
    assert [a.outcome for a in outcomes] == [
        "retry_scheduled",
        "retry_scheduled",
        "dead_lettered",
    ]


def test_a_failing_batch_handler_is_split_and_every_event_keeps_its_outcome(
    fresh_topics,
) -> None:
    batch_calls.clear()
    modes = {3: "fail", 6: "poison", 9: "flaky"}
    ids = send_events(
        *[
            TestBatched(
                ping_id=f"b{i}",
                key_id=f"k{i % 3}",
                mode=modes.get(i, "ok"),
                fail_times=1,
            )
            for i in range(12)
        ]
    )
    ok = [f"b{i}" for i in range(12) if i not in modes]
    with running_consumer(streams=["payment-complete"]):
        wait_until(
            lambda: (
                sum(effects(p) for p in ok) == len(ok)
                and effects("b9") == 1
                and FailedAttempt.objects.filter(outcome="dead_lettered").count() == 2
            ),
            what="every event's outcome",
        )
    assert max(batch_calls) > 1, "the batch path ran"
    assert 1 in batch_calls, "the one-event-at-a-time path ran"
    assert all(effects(p) == 1 for p in ok)
    assert Effect.objects.get(ping_id="b9").n == 2, "the flaky one, on its retry"
    assert effects("b3") == effects("b6") == 0
    handler = "tests.effects.handlers.record_batch"
    assert InboxEntry.objects.filter(handler=handler).count() == len(ok) + 1

    def outcomes(index: int) -> list[str]:
        rows = FailedAttempt.objects.filter(event_id=ids[index]).order_by("attempt")
        return [a.outcome for a in rows]

    assert outcomes(3) == ["retry_scheduled", "retry_scheduled", "dead_lettered"]
    assert outcomes(6) == ["dead_lettered"], "poison is not retried"
    assert outcomes(9) == ["retry_scheduled"]
    letters = read_topic(
        fresh_topics.dlq_topic("payment-complete"), expected=2, timeout=10
    )
    assert sorted(header(m, "event_id") for m in letters) == sorted([ids[3], ids[6]])
    assert {header(m, dl.DLT_HANDLER) for m in letters} == {handler}


def test_a_dead_letter_too_large_for_the_broker_goes_without_its_stack_trace(
    fresh_topics,
) -> None:
    # About 992 KB: it fits as an event and as a retry, but with the dead-letter
    # headers (a 2 KB message, an 8 KB trace) it passes the producer's 1 MB limit.
    [bad_id, _] = send_events(
        TestPinged(ping_id="big-" + "x" * 991_500, mode="fail", key_id="B"),
        TestPinged(ping_id="after-big", key_id="B"),
    )
    with running_consumer():
        wait_until(
            lambda: FailedAttempt.objects.filter(
                event_id=bad_id, outcome="dead_lettered"
            ).exists(),
            what="the dead letter",
        )
        [letter] = read_topic(
            fresh_topics.dlq_topic("reservation"), expected=1, timeout=10
        )
    assert header(letter, "event_id") == bad_id
    assert header(letter, dl.DLT_EXCEPTION_STACKTRACE) is None
    assert header(letter, dl.DLT_EXCEPTION_FQCN) == "builtins.RuntimeError"
    assert header(letter, dl.DLT_EXCEPTION_MESSAGE).startswith("ping big-xxx")
    assert effects("after-big") == 1


def test_a_consumer_reports_the_lag_of_partitions_that_deliver_nothing(
    fresh_topics,
) -> None:
    """After a rebalance, an idle partition has no position until a message comes:
    its lag is still reported (from its commit), so the admin shows every partition."""
    send_events(*[TestPinged(ping_id=f"lag{i}", key_id=f"key{i}") for i in range(12)])
    topic = fresh_topics.topic("reservation")
    with running_consumer():
        wait_until(lambda: Effect.objects.count() == 12, what="all handled")
    with_messages = set(
        InboxEntry.objects.filter(topic=topic).values_list("partition", flat=True)
    )
    ConsumerLag.objects.all().delete()
    with running_consumer() as again:
        wait_until(
            lambda: (
                with_messages
                <= set(
                    ConsumerLag.objects.filter(
                        group=again.group_id, topic=topic
                    ).values_list("partition", flat=True)
                )
            ),
            what="a lag report of every partition, none of which delivers anything",
        )
    assert set(
        ConsumerLag.objects.filter(topic=topic).values_list("lag", flat=True)
    ) == {0}


def test_poison_messages_are_dead_lettered_at_once(fresh_topics) -> None:
    topic = fresh_topics.topic("reservation")

    def envelope(**changes) -> bytes:
        base = {
            "id": "0b7e4f0a-2222-4c8e-9c55-0123456789ab",
            "type": "TestPinged",
            "version": 1,
            "occurred_at": "2026-11-25T12:00:00+00:00",
            "aggregate_type": "test",
            "aggregate_id": "p",
            "data": {"ping_id": "p"},
        }
        base.update(changes)
        return json.dumps(base).encode()

    bad_values = [
        b"{not json",
        b"\xff\xfe",
        envelope(type="NoSuchEvent"),
        envelope(version=99),
        envelope(data={"n": 1}),
        envelope(data={"ping_id": 5}),
    ]
    for value in bad_values:
        send_raw(topic, key=b"p", value=value)
    [poison_id] = send_events(TestPinged(ping_id="handler-poison", mode="poison"))

    with running_consumer():
        letters = wait_until(
            lambda: (
                found
                if len(
                    found := read_topic(
                        fresh_topics.dlq_topic("reservation"), timeout=2
                    )
                )
                == 7
                else None
            ),
            timeout=30,
            what="seven dead letters",
        )
    assert {header(m, dl.DLT_ATTEMPTS) for m in letters} == {"1"}
    assert sorted(m.value() for m in letters[:6]) == sorted(bad_values)
    fqcns = {header(m, dl.DLT_EXCEPTION_FQCN) for m in letters}
    assert fqcns == {"events.core.types.PoisonMessage"}
    messages = {header(m, dl.DLT_EXCEPTION_MESSAGE) for m in letters}
    assert any("not JSON" in m for m in messages)
    assert any("unknown event type" in m for m in messages)
    assert any("missing required field `ping_id`" in m for m in messages)
    assert not FailedAttempt.objects.exclude(outcome="dead_lettered").exists()
    assert FailedAttempt.objects.get(event_id=poison_id).attempt == 1


def test_blocking_retry_keeps_the_partition_in_order(fresh_topics) -> None:
    send_events(
        TestOrdered(ping_id="first", mode="flaky", fail_times=2, key_id="K", n=1),
        TestOrdered(ping_id="second", key_id="K", n=2),
    )
    with running_consumer():
        wait_until(lambda: effects("second") == 1, timeout=30, what="both events")
    order = list(Effect.objects.order_by("id").values_list("ping_id", flat=True))
    assert order == ["first", "second"]
    assert list(
        FailedAttempt.objects.order_by("attempt").values_list("attempt", "outcome")
    ) == [(1, "retried_in_place"), (2, "retried_in_place")]


def test_dead_letter_storm_pauses_the_consumer(fresh_topics, settings, caplog) -> None:
    settings.EVENTS_DLQ_MAX_PER_WINDOW = 3
    settings.EVENTS_DLQ_STORM_PAUSE_SECONDS = 30
    topic = fresh_topics.topic("reservation")
    for i in range(8):
        send_raw(topic, key=b"storm", value=f"garbage {i}".encode())
    send_events(TestPinged(ping_id="behind-the-storm", key_id="storm"))
    with running_consumer():
        wait_until(lambda: "DEAD-LETTER STORM" in caplog.text, what="the storm alarm")
        letters = read_topic(
            fresh_topics.dlq_topic("reservation"), expected=3, timeout=5
        )
    assert len(letters) == 3
    assert effects("behind-the-storm") == 0


@pytest.mark.parametrize("threads", ["1", "3"])
def test_consumer_killed_mid_batch_loses_nothing_and_doubles_nothing(
    fresh_topics, subprocess_env, threads
) -> None:
    env = child_env()
    # The later events are slow enough that no consumer finishes them all in the time
    # between seeing 60 effects and the kill: work is outstanding when it lands.
    send_events(
        *[
            TestPinged(
                ping_id=f"k{i}", key_id=f"key{i % 7}", sleep_ms=5 if i < 100 else 20
            )
            for i in range(400)
        ]
    )
    first = start_consumer_process(
        env, "--topics", "reservation", "--batch-size", "50", "--threads", threads
    )
    wait_until(
        lambda: Effect.objects.count() >= 60, timeout=60, what="a first part handled"
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert Effect.objects.count() < 400, "work was outstanding at the kill"

    second = start_consumer_process(
        env, "--topics", "reservation", "--batch-size", "50", "--threads", threads
    )
    try:
        wait_until(
            lambda: Effect.objects.values("ping_id").distinct().count() == 400,
            timeout=90,
            what="every event handled",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    assert Effect.objects.count() == 400, "an effect was doubled"
    assert InboxEntry.objects.count() == 400


@pytest.mark.parametrize("threads", ["1", "3"])
def test_sigterm_stops_cleanly_with_offsets_committed(
    fresh_topics, subprocess_env, threads
) -> None:
    env = child_env()
    send_events(
        *[TestPinged(ping_id=f"t{i}", key_id=f"key{i % 5}") for i in range(100)]
    )
    process = start_consumer_process(
        env, "--topics", "reservation", "--threads", threads
    )
    try:
        wait_until(
            lambda: Effect.objects.count() == 100, timeout=60, what="all handled"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    stderr = process_log(process)
    assert code == 0, stderr
    # Every consumer thread finished its batch, committed and left.
    assert stderr.count("left the group") == int(threads), stderr

    topic = fresh_topics.topic("reservation")
    reader = build_consumer(
        fresh_topics.consumer_group, **{"group.protocol": "classic"}
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(fresh_topics.partitions)]
        committed = reader.committed(parts, timeout=10)
        ends = [reader.get_watermark_offsets(p, timeout=10)[1] for p in parts]
    finally:
        reader.close()
    assert [c.offset if c.offset >= 0 else 0 for c in committed] == ends


def test_a_consumer_joining_a_running_group_takes_over_partitions(
    fresh_topics, subprocess_env
) -> None:
    env = child_env()
    stop_sending = threading.Event()
    sent: list[str] = []

    def keep_sending() -> None:
        n = 0
        while not stop_sending.is_set():
            send_events(
                *[
                    TestPinged(ping_id=f"j{n + i}", key_id=f"key{n + i}")
                    for i in range(10)
                ]
            )
            sent.extend(f"j{n + i}" for i in range(10))
            n += 10
            time.sleep(0.05)

    first = start_consumer_process(env, "--topics", "reservation")
    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    second = None
    try:
        wait_until(
            lambda: Effect.objects.exists(),
            timeout=60,
            what="the first consumer working",
        )
        second = start_consumer_process(env, "--topics", "reservation")
        wait_until(
            lambda: Effect.objects.filter(handler__endswith=f"@{second.pid}").exists(),
            timeout=60,
            what="the joining consumer handling events",
        )
        stop_sending.set()
        sender.join(timeout=30)
        wait_until(
            lambda: Effect.objects.values("ping_id").distinct().count() == len(sent),
            timeout=60,
            what="every event handled",
        )
    finally:
        stop_sending.set()
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGTERM)
        logs = {}
        for name, process in (("first", first), ("second", second)):
            if process is not None:
                process.wait(timeout=30)
                logs[name] = process_log(process)
    assert Effect.objects.count() == len(sent), "an effect was doubled"
    assert Effect.objects.filter(handler__endswith=f"@{first.pid}").exists()
    assert "revoked" in logs["first"], "the first consumer gave no partition away"
    delays = [
        float(d) for d in re.findall(r"consuming ([0-9.]+) s after", logs["second"])
    ]
    assert delays, "the joining consumer never consumed from its new partitions"
    print(
        f"joined; new partitions consumed {min(delays):.3f}-{max(delays):.3f} s after assignment"
    )
