"""Guarantees 1-3 against the real broker and database: atomic, at-least-once, ordered."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import threading
import uuid

import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY

import events
from events.core.kafka import Producer, build_producer
from events.core.outbox import OutboxError
from events.models import OutboxEvent, PublishedEvent
from events.relay.outbox_relay import OutboxRelay
from events.relay.reader import Fetched, Reader
from events.relay.recorder import Batch
from events.relay.sending import BatchSender
from events.relay.window import Row, Window
from tests.effects.event_types import TestPinged
from tests.events.outbox_rows import (
    first_occurrences,
    insert_outbox_rows,
    new_topic_name,
    sequences_by_key,
)
from tests.events.pipeline import process_log
from tests.events.relay_process import (
    recording_blocked,
    running_relay,
    start_relay_process,
)
from tests.kafka_helpers import header, make_topic, read_topic
from tests.waiting import wait_until


def unsent(topic: str) -> int:
    """Rows of `topic` still waiting in the outbox (acknowledged rows are deleted)."""
    return OutboxEvent.objects.filter(topic=topic, parked_at__isnull=True).count()


@pytest.mark.django_db(transaction=True)
def test_publish_outside_a_transaction_is_refused() -> None:
    with pytest.raises(OutboxError, match="inside transaction.atomic"):
        events.publish(TestPinged(ping_id="p"))
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_event_never_reaches_kafka_and_a_committed_one_does(
    kafka_topics, settings
) -> None:
    settings.OUTBOX_DELIVERY_LOG = True
    topic = kafka_topics.topic("reservation")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        events.publish(TestPinged(ping_id="rolled-back"))
        raise Boom
    assert not OutboxEvent.objects.exists()

    with transaction.atomic():
        row = events.publish(TestPinged(ping_id="ping-1", n=7))

    with running_relay(poll_interval=0.2):
        wait_until(
            lambda: PublishedEvent.objects.filter(topic=topic).exists(),
            what="the committed event sent",
        )
    assert not OutboxEvent.objects.exists(), "acknowledged row left in the outbox"
    published = PublishedEvent.objects.get(event_id=row.event_id)
    messages = read_topic(topic, expected=1, timeout=10)
    assert len(messages) == 1
    message = messages[0]
    assert message.key() == b"ping-1"
    assert message.partition() == published.partition
    assert message.offset() == published.offset
    assert header(message, "event_id") == str(row.event_id)
    assert header(message, "event_type") == "TestPinged"
    assert len(header(message, "trace_id") or "") == 32
    assert b"rolled-back" not in message.value()


@pytest.mark.django_db(transaction=True)
def test_without_the_delivery_log_acknowledged_rows_are_only_deleted(
    kafka_topics,
) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "nolog"))
    # More rows than a batch: the relay reads the next batch ahead while producing.
    insert_outbox_rows(250, topic=topic, keys=5)
    batches_timed = REGISTRY.get_sample_value("outbox_relay_batch_seconds_count") or 0
    with running_relay(poll_interval=0.2, batch_size=100):
        wait_until(lambda: unsent(topic) == 0, what="all rows sent")
    assert not PublishedEvent.objects.filter(topic=topic).exists()
    # Three batches (100, 100, 50), each timed from production to its recording.
    timed = REGISTRY.get_sample_value("outbox_relay_batch_seconds_count")
    assert timed is not None and timed - batches_timed >= 3
    messages = read_topic(topic, expected=250, timeout=20)
    seqs = [seq for by_key in sequences_by_key(messages).values() for seq in by_key]
    assert sorted(seqs) == list(range(250))


@pytest.mark.django_db(transaction=True)
def test_a_late_commit_below_the_relays_position_does_not_wait_for_the_poll(
    kafka_topics,
) -> None:
    """A row that commits, with a lower id, just as the relay reads from past it.

    Its notification is drained by that read, so only a read from the lowest id finds
    it; sleeping after the empty read would leave it for the whole poll interval.
    """
    topic = kafka_topics.topic("reservation")
    holding, release = threading.Event(), threading.Event()

    def late_writer() -> None:
        with transaction.atomic():
            events.publish(TestPinged(ping_id="late", key_id="late-key"))
            holding.set()
            release.wait(30)
        connection.close()

    writer = threading.Thread(target=late_writer)
    writer.start()
    assert holding.wait(10)
    with transaction.atomic():
        events.publish(TestPinged(ping_id="early", key_id="other-key"))

    class LateCommitDuringARead(Reader):
        def read(self, window: Window) -> Fetched:
            if not window.from_the_start and not release.is_set():
                release.set()  # the late row commits now, below the rows read
                writer.join()
            return super().read(window)

    class Relay(OutboxRelay):
        reader_type = LateCommitDuringARead

    with running_relay(Relay(batch_size=1, poll_interval=30.0)):
        try:
            wait_until(
                lambda: unsent(topic) == 0 and release.is_set(),
                timeout=10,
                what="the late row sent well within the 30 s poll interval",
            )
        finally:
            release.set()
    ours = {b"late-key", b"other-key"}  # the session's topic holds other tests' too
    messages = read_topic(topic, expected=2, timeout=10)
    assert sorted(m.key() for m in messages if m.key() in ours) == sorted(ours)


@pytest.mark.django_db(transaction=True)
def test_a_key_keeps_its_order_when_its_first_event_commits_after_a_later_id(
    kafka_topics,
) -> None:
    """Key K's first event (id a) commits after another key's event (id b > a) was read.

    K's second event gets an id after b. Reading on from b by id would send it before
    the first; reading by commit cannot.
    """
    topic = kafka_topics.topic("reservation")
    holding, release = threading.Event(), threading.Event()

    def publish_and_commit(ping_id: str, wait: threading.Event | None = None) -> None:
        with transaction.atomic():
            events.publish(TestPinged(ping_id=ping_id, key_id="order-k"))
            if wait is not None:
                holding.set()
                wait.wait(30)
        connection.close()

    first = threading.Thread(target=publish_and_commit, args=("k-first", release))
    first.start()
    assert holding.wait(10)
    with transaction.atomic():
        other = events.publish(TestPinged(ping_id="other", key_id="order-other"))

    class CommitsWhileOtherIsInFlight(BatchSender):
        def produce_batch(self, producer: Producer, rows: list[Row]) -> Batch:
            batch = super().produce_batch(producer, rows)
            if any(row[0] == other.id for row in rows) and not release.is_set():
                release.set()  # K's first event commits, then its second one
                first.join()
                second = threading.Thread(target=publish_and_commit, args=("k-second",))
                second.start()
                second.join()
            return batch

    class Relay(OutboxRelay):
        sender_type = CommitsWhileOtherIsInFlight

    with running_relay(Relay(poll_interval=30.0)):
        try:
            wait_until(
                lambda: release.is_set() and unsent(topic) == 0,
                timeout=20,
                what="all three events sent",
            )
        finally:
            release.set()
    messages = [m for m in read_topic(topic, expected=3) if m.key() == b"order-k"]
    assert len({m.partition() for m in messages}) == 1
    in_order = sorted(messages, key=lambda m: m.offset())
    pings = [json.loads(m.value())["data"]["ping_id"] for m in in_order]
    assert pings == ["k-first", "k-second"]


def stop_process(process: subprocess.Popen[bytes] | None) -> int | None:
    """SIGTERM `process` if it still runs; return its exit status."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_relay_killed_mid_drain_loses_no_event(kafka_topics, subprocess_env) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "kill9"))
    insert_outbox_rows(10_000, topic=topic, keys=100)

    # The kill lands mid-drain, whatever the relay's speed: it stalls where it cannot
    # record the batch that holds row 3,000, with the batches after it acknowledged.
    first = None
    try:
        with recording_blocked(topic, at=3_000) as lock:
            first = start_relay_process(subprocess_env, "--batch-size", "500")
            wait_until(
                lock.holds_back_a_relay, timeout=60, what="the relay stalled mid-drain"
            )
            pending_at_kill = unsent(topic)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
    finally:
        stop_process(first)
    assert 7_000 <= pending_at_kill < 10_000, "the relay was not mid-drain"
    sent_at_kill = 10_000 - pending_at_kill

    second = start_relay_process(subprocess_env, "--batch-size", "500")
    try:
        wait_until(lambda: unsent(topic) == 0, timeout=90, what="all sent")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0

    messages = read_topic(topic, expected=10_000, timeout=60)
    seqs = [seq for by_key in sequences_by_key(messages).values() for seq in by_key]
    assert set(seqs) == set(range(10_000)), "an event was lost"
    duplicates = len(seqs) - 10_000
    # Acknowledged but not recorded when the relay died: sent again, never lost.
    assert duplicates > 0, "the kill did not land between acknowledgement and record"
    print(f"killed at {sent_at_kill} sent; {duplicates} duplicates after restart")


@pytest.mark.django_db(transaction=True)
def test_two_relays_keep_per_key_order_across_a_leader_crash(
    kafka_topics, subprocess_env
) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "order"))
    insert_outbox_rows(6_000, topic=topic, keys=40)
    # Only the standby logs what it sends: the delivery log tells its rows apart.
    leader_env = {**subprocess_env, "OUTBOX_DELIVERY_LOG": "false"}
    standby_env = {**subprocess_env, "OUTBOX_DELIVERY_LOG": "true"}

    leader = standby = None
    try:
        # The leader stalls mid-drain (it cannot record the batch with row 3,000) with
        # later batches acknowledged: the standby must send those again, in order.
        with recording_blocked(topic, at=3_000) as lock:
            leader = start_relay_process(leader_env, "--batch-size", "200")
            wait_until(
                lock.holds_back_a_relay, timeout=60, what="the leader stalled mid-drain"
            )
            standby = start_relay_process(standby_env, "--batch-size", "200")
            wait_until(
                lambda: "waiting as a hot standby" in process_log(standby),
                timeout=60,
                what="the second relay waiting as a standby",
            )
            insert_outbox_rows(2_000, topic=topic, keys=40, start=6_000)
            pending_at_kill = unsent(topic)
            leader.send_signal(signal.SIGKILL)
            leader.wait(timeout=10)
        assert pending_at_kill >= 3_000 + 2_000, "rows sent before the kill"
        wait_until(lambda: unsent(topic) == 0, timeout=90, what="standby drains")
        assert "relay is the leader" in process_log(standby)
    finally:
        stop_process(leader)
        stop_process(standby)

    # Every row pending at the kill was sent by the standby, and only those.
    sent_by_standby = PublishedEvent.objects.filter(topic=topic).count()
    assert sent_by_standby == pending_at_kill

    messages = read_topic(topic, expected=8_000, timeout=60)
    partitions_by_key: dict[bytes, set[int]] = {}
    for message in messages:
        partitions_by_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values()), (
        "a key spans partitions"
    )
    by_key = sequences_by_key(messages)
    assert len(by_key) == 40
    for key, seqs in by_key.items():
        firsts = first_occurrences(seqs)
        assert firsts == sorted(firsts), f"key {key} out of order"
        assert len(firsts) == 200


@pytest.mark.django_db(transaction=True)
def test_relay_rides_out_a_broker_outage_and_loses_nothing(
    kafka_topics, spare_broker, settings
) -> None:
    from tests.conftest import spare_broker_ctl

    settings.KAFKA_BOOTSTRAP_SERVERS = spare_broker
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "outage"))
    insert_outbox_rows(500, topic=topic, keys=10)

    def undelivered() -> int:
        """Second-half rows whose delivery failed and was noted (insert sets '')."""
        return (
            unsent(topic)
            - OutboxEvent.objects.filter(topic=topic, last_error="").count()
        )

    # Deliveries fail after 5 s instead of 30: the failure path runs within the test.
    def producer() -> Producer:
        return build_producer(**{"delivery.timeout.ms": 5_000})

    with running_relay(poll_interval=0.2, producer_factory=producer):
        wait_until(lambda: unsent(topic) == 0, timeout=60, what="first half sent")
        spare_broker_ctl("stop")
        insert_outbox_rows(500, topic=topic, keys=10, start=500)
        # The relay produced every row, the broker answered for none: all failed,
        # noted, and still pending.
        wait_until(
            lambda: undelivered() == 500, timeout=60, what="the deliveries failing"
        )
        assert unsent(topic) == 500, "rows marked sent while the broker was down"
        spare_broker_ctl("start")
        wait_until(lambda: unsent(topic) == 0, timeout=90, what="second half")
    messages = read_topic(topic, expected=1_000, timeout=30)
    seqs = {seq for by_key in sequences_by_key(messages).values() for seq in by_key}
    assert seqs == set(range(1_000))


@pytest.mark.django_db(transaction=True)
def test_oversized_row_is_parked_while_the_rows_behind_it_are_delivered(
    kafka_topics,
) -> None:
    topic = make_topic(
        new_topic_name(kafka_topics.topic_prefix, "small"),
        **{"max.message.bytes": "4096"},
    )
    insert_outbox_rows(3, topic=topic, keys=1, start=0)
    # Random bytes, so compression cannot bring it under the topic's limit.
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        event_type="TestSequenced",
        schema_version=1,
        topic=topic,
        key="k0",
        payload={"seq": 3, "key": "k0", "pad": secrets.token_hex(10_000)},
        aggregate_type="test",
        aggregate_id="k0",
    )
    insert_outbox_rows(5, topic=topic, keys=1, start=4)
    with running_relay(poll_interval=0.2):
        wait_until(lambda: unsent(topic) == 0, timeout=60, what="small rows sent")
    parked = OutboxEvent.objects.get(topic=topic, parked_at__isnull=False)
    assert parked.payload["seq"] == 3
    assert "TOO_LARGE" in parked.last_error
    messages = read_topic(topic, expected=8, timeout=20)
    assert sorted(json_seq(m) for m in messages) == [0, 1, 2, 4, 5, 6, 7, 8]


def json_seq(message) -> int:
    import json

    return json.loads(message.value())["seq"]
