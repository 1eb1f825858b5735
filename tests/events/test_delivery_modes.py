"""The delivery guarantees, against both relays: polling (relay_outbox) and CDC (Debezium).

Each test runs once per mode. The polling variants run in the main suite; the cdc
variants are marked `cdc` (`make test-cdc`, which starts Kafka Connect) and use the
project's Connect worker (infra/connect) with the connector registered for the test
database, deleted again (slot dropped) after each test. Events go through the real
`events.publish`; what arrived is read back from the broker; consumers are the real
ConsumerRunner. Nothing is mocked.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from events import publish
from events.core.conf import PipelineSettings, pipeline_settings
from events.core.kafka import KafkaException, Message, TopicPartition, build_consumer
from events.models import InboxDuplicateCount, InboxEntry, OutboxEvent
from reservations.events import ReservationCreated
from reservations.models import Notification
from tests.events.pipeline import running_consumer
from tests.events.relay_modes import CdcRelay, PollingRelay, murmur2_partition
from tests.kafka_helpers import header, make_topic, read_topic
from tests.reservations.factories import make_user
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.kafka]

MODES = ["polling", pytest.param("cdc", marks=pytest.mark.cdc)]


@pytest.fixture(params=MODES)
def relay(
    request: Any, fresh_topics: PipelineSettings, subprocess_env: dict, settings: Any
) -> Iterator[PollingRelay | CdcRelay]:
    """The relay of this mode, not started yet (a test may change settings first)."""
    harness: PollingRelay | CdcRelay
    if request.param == "cdc":
        settings.OUTBOX_RELAY = "cdc"
        harness = CdcRelay()
    else:
        harness = PollingRelay(subprocess_env)
    try:
        yield harness
    finally:
        # Shown by pytest only when the test failed.
        print(f"---- {harness.mode} relay log ----\n{harness.log()}")
        harness.stop()


def created(n: int, *, key: int, user_id: int = 1, pad: str = "") -> ReservationCreated:
    """A ReservationCreated whose key is `key` and whose seat_id numbers it."""
    return ReservationCreated(
        reservation_id=key,
        seat_id=n,
        seat_number=f"{n}{pad}",
        performance_id=1,
        user_id=user_id,
        price=100,
        status="PENDING",
        hold_expires_at="2030-01-01T00:00:00+00:00",
    )


def topic_size(topic: str) -> int:
    """Messages on `topic` (high watermarks), duplicates included; 0 while the broker
    cannot say yet (a new topic's leaders)."""
    consumer = build_consumer(
        f"test-size-{uuid.uuid4().hex}", **{"group.protocol": "classic"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    except KafkaException:
        return 0
    finally:
        consumer.close()


def messages_of(topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
    """Every message of `topic` once it holds `expected`, each partition in offset order.

    Read again from scratch while the broker answers a new topic's watermarks with
    NOT_LEADER or a stale 0 (the broker is shared with other test runs).
    """

    found: list[list[Message]] = []

    def attempt() -> bool:
        try:
            messages = read_topic(topic, expected=expected, timeout=10)
        except KafkaException:
            return False
        if len(messages) < expected:
            return False
        # Not `return messages`: wait_until wants a truthy value, and an empty topic
        # is the answer when nothing is expected.
        found.append(messages)
        return True

    wait_until(attempt, timeout=timeout, interval=0.5, what=f"{expected} on {topic}")
    return sorted(found[-1], key=lambda m: (m.partition(), m.offset()))


def headers_of(message: Message) -> dict[str, str]:
    found = [(k, v.decode()) for k, v in message.headers() or []]
    assert len(found) == len({k for k, _ in found}), f"repeated headers: {found}"
    return dict(found)


def test_a_rolled_back_publish_sends_nothing_and_a_committed_one_arrives_as_written(
    relay: PollingRelay | CdcRelay,
) -> None:
    relay.start()
    topic = pipeline_settings().topic("reservation")
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(created(0, key=0))
        raise RuntimeError("roll back")
    rows = []
    for n in range(1, 31):
        with transaction.atomic():
            rows.append(publish(created(n, key=n), headers={"x-test": f"ünï {n}"}))
    if relay.mode == "cdc":
        # publish deleted each row in its own transaction: the WAL has the insert.
        assert not OutboxEvent.objects.exists()

    messages = messages_of(topic, len(rows))
    assert len(messages) == len(rows)  # nothing rolled back, nothing twice
    by_id = {header(m, "event_id"): m for m in messages}
    for row in rows:
        message = by_id[str(row.event_id)]
        # The exact bytes the polling relay sends: key.encode(), payload.encode().
        assert message.key() == row.key.encode()
        assert message.value() == json.dumps(row.payload).encode()
        assert headers_of(message) == row.headers
        assert row.headers["x-test"].startswith("ünï")
        # The same partition in both modes: Kafka's murmur2 of the key.
        assert message.partition() == murmur2_partition(row.key.encode(), 3)
    wait_until(lambda: not OutboxEvent.objects.exists(), what="an empty outbox")


def test_concurrent_transactions_arrive_in_commit_order_per_key(
    relay: PollingRelay | CdcRelay,
) -> None:
    relay.start()
    topic = pipeline_settings().topic("reservation")
    committed: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            for i in range(50):
                with transaction.atomic():
                    row = publish(created(w * 1000 + i, key=rng.randrange(6)))
                    # publish holds the key's lock until commit, so the order in which
                    # writers get here is the key's commit order.
                    with lock:
                        committed[row.key].append(str(row.event_id))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    messages = messages_of(topic, 200)
    arrived: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        event_id = header(message, "event_id")
        key = message.key().decode()
        if event_id not in arrived[key]:
            arrived[key].append(event_id)
    assert dict(arrived) == dict(committed)


def test_a_crash_mid_stream_loses_nothing_and_the_inbox_absorbs_the_duplicates(
    relay: PollingRelay | CdcRelay,
) -> None:
    user = make_user()
    relay.start()
    topic = pipeline_settings().topic("reservation")
    total = 3_000
    published: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for n in range(total):
                with transaction.atomic():
                    row = publish(created(n, key=n % 20, user_id=user.pk))
                published.append(str(row.event_id))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    with running_consumer(streams=["reservation"]):
        thread = threading.Thread(target=writer)
        thread.start()
        wait_until(lambda: topic_size(topic) >= 300, timeout=60, what="300 sent")
        at_kill = len(published)
        relay.crash()
        at_restart = len(published)
        thread.join(timeout=180)
        assert not errors, errors

        def all_arrived() -> list[str] | None:
            got = [header(m, "event_id") for m in messages_of(topic, total)]
            return got if set(got) >= set(published) else None

        # Duplicates count towards the topic's size: read until every event is there.
        ids = wait_until(
            all_arrived,
            timeout=120,
            interval=1.0,
            what="every published event on the topic",
        )
        assert set(ids) == set(published)  # every event arrived, nothing else
        # One writer, so publish order is commit order: each key's first copies
        # arrived in it, across the crash.
        order = {event_id: n for n, event_id in enumerate(published)}
        firsts: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for message in messages_of(topic, total):
            event_id = header(message, "event_id")
            if event_id not in seen:
                seen.add(event_id)
                firsts[message.key().decode()].append(order[event_id])
        assert all(seqs == sorted(seqs) for seqs in firsts.values())
        duplicates = len(ids) - len(set(ids))
        wait_until(
            lambda: InboxEntry.objects.filter(topic=topic).count() == total,
            timeout=120,
            what="every event handled",
        )

        def absorbed() -> int:
            got = InboxDuplicateCount.objects.aggregate(n=Sum("count"))["n"]
            return got or 0

        wait_until(lambda: absorbed() == duplicates, what="the duplicates counted")
    # One effect per event, however many times it was sent.
    assert Notification.objects.filter(user=user).count() == total
    assert (
        InboxEntry.objects.filter(topic=topic).values("event_id").distinct().count()
        == total
    )
    print(
        f"{relay.mode}: kill -9 after {at_kill} published, back after {at_restart}"
        f" ({getattr(relay, 'restart_seconds', None)} s to running); {duplicates}"
        f" duplicates sent again, {absorbed()} absorbed by the inbox"
    )


def test_an_oversized_event_is_parked_with_its_reason_and_those_behind_it_arrive(
    relay: PollingRelay | CdcRelay, settings: Any, fresh_topics: PipelineSettings
) -> None:
    limit = 16_384
    # This test's reservation topic refuses records over `limit`; cdc mode parks at it.
    settings.KAFKA_TOPIC_PREFIX = f"{fresh_topics.topic_prefix}small-"
    topic = make_topic(
        pipeline_settings().topic("reservation"), **{"max.message.bytes": str(limit)}
    )
    settings.OUTBOX_MAX_MESSAGE_BYTES = limit
    relay.start()
    with transaction.atomic():
        before = publish(created(1, key=1))
    with transaction.atomic():
        # Random hex, so the polling relay's compression cannot bring it under.
        big = publish(created(2, key=1, pad=secrets.token_hex(40_000)))
    with transaction.atomic():
        after = publish(created(3, key=1))

    parked = wait_until(
        lambda: OutboxEvent.objects.filter(parked_at__isnull=False).first(),
        what="the big event parked",
    )
    assert parked.event_id == big.event_id
    wait_until(
        lambda: not OutboxEvent.objects.filter(parked_at__isnull=True).exists(),
        what="nothing pending",
    )
    messages = messages_of(topic, 2)
    assert sorted(header(m, "event_id") for m in messages) == sorted(
        [str(before.event_id), str(after.event_id)]
    )
    if relay.mode == "cdc":
        assert "OUTBOX_MAX_MESSAGE_BYTES=16384" in parked.last_error
    else:
        assert "TOO_LARGE" in parked.last_error


@pytest.mark.cdc
def test_cdc_a_record_the_topic_refuses_fails_the_task_and_is_sent_after_the_fix(
    fresh_topics: PipelineSettings, settings: Any
) -> None:
    """A topic whose limit is below OUTBOX_MAX_MESSAGE_BYTES: the task stops, nothing
    is lost, the connector's status says why; raise the limit, restart, it arrives."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    from events.cdc.connector import connector_name
    from events.cdc.rest import ConnectClient
    from events.core.kafka import build_admin

    settings.OUTBOX_RELAY = "cdc"
    settings.KAFKA_TOPIC_PREFIX = f"{fresh_topics.topic_prefix}narrow-"
    topic = make_topic(
        pipeline_settings().topic("reservation"), **{"max.message.bytes": "16384"}
    )
    relay = CdcRelay()
    client = ConnectClient(pipeline_settings().cdc_connect_url)
    name = connector_name(connection.settings_dict["NAME"])
    try:
        relay.start()
        with transaction.atomic():
            big = publish(created(1, key=1, pad=secrets.token_hex(20_000)))
        with transaction.atomic():
            small = publish(created(2, key=1))
        failed = wait_until(
            lambda: next(
                (t for t in client.status(name)["tasks"] if t["state"] == "FAILED"),
                None,
            ),
            timeout=60,
            what="the task to fail",
        )
        assert "RecordTooLargeException" in failed["trace"]
        # What the producer had in flight behind the refused record may have been
        # written (the small event, ahead of the big one of its key) or not: that
        # depends on how the producer batched them (either happens here).
        before_fix = [header(m, "event_id") for m in messages_of(topic, 0)]
        assert str(big.event_id) not in before_fix
        assert set(before_fix) <= {str(small.event_id)}  # and nothing else

        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    "1048588",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        admin = build_admin()  # must outlive its future
        admin.incremental_alter_configs([resource])[resource].result(30)
        client.restart(name)

        def sent_again() -> list[str] | None:
            ids = [header(m, "event_id") for m in messages_of(topic, 2)]
            if str(big.event_id) not in ids:
                return None
            return ids if len(ids) - ids.index(str(big.event_id)) >= 2 else None

        # Sent again from the last committed offset: the big one, then the small one
        # (one key, so one partition, in offset order).
        ids = wait_until(sent_again, timeout=60, interval=0.5, what="the big one sent")
        assert ids[ids.index(str(big.event_id)) :] == [
            str(big.event_id),
            str(small.event_id),
        ]
        assert set(ids[: ids.index(str(big.event_id))]) <= {str(small.event_id)}
        print(f"cdc: before the fix {len(before_fix)} sent past the refused record")
    finally:
        relay.stop()


@pytest.mark.cdc
def test_cdc_an_idle_outbox_lets_the_slot_move_on_and_survives_a_restart(
    fresh_topics: PipelineSettings, settings: Any
) -> None:
    """While the outbox is idle, other writes must not pile up behind the slot, and a
    restarted worker must find its offset still in the slot (heartbeat messages)."""
    from events.cdc import database

    settings.OUTBOX_RELAY = "cdc"
    relay = CdcRelay()
    try:
        relay.start()
        make_user()  # WAL that is not the outbox's
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            written = cursor.fetchone()[0]

        def confirmed_past_it() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    [written, database.slot_name()],
                )
                return bool(cursor.fetchone()[0])

        wait_until(confirmed_past_it, timeout=60, interval=0.5, what="the slot to move")
        relay.crash()
        with transaction.atomic():
            row = publish(created(1, key=1))
        topic = pipeline_settings().topic("reservation")
        assert [header(m, "event_id") for m in messages_of(topic, 1)] == [
            str(row.event_id)
        ]
    finally:
        relay.stop()
