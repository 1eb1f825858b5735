"""The two legs of bench.api's end-to-end latency, split at the relay's produce.

End to end is business commit -> SeatReserved handler commit, both off PostgreSQL's
clock (bench.dbclock). Between them sits the relay's `produce()` of the SeatReserved
message, whose time is the message's Kafka timestamp: CreateTime, which librdkafka
sets in the relay's process when the message is produced (the relay passes none), in
whole ms of the wall clock. The relay and PostgreSQL run on this machine, so both
times are read off one clock.

- commit_to_produce: the business transaction's commit timestamp to the produce. It
  holds the commit's WAL flush (PostgreSQL takes the timestamp before it), the
  NOTIFY, and the relay's read of the outbox.
- produce_to_handler_commit: the produce to the handler transaction's commit
  timestamp: librdkafka's send, the broker's append, the consumer's fetch, the
  handler and its transaction up to its commit (not the commit's own WAL flush).

Entry points: `topic_timestamp_type(topic)` and `phase_legs(after_id, topic)`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

# events.core.kafka owns the project's clients and re-exports what the pipeline uses; the
# timestamp type and ConfigResource are only the bench's, so they come from here.
from confluent_kafka import TIMESTAMP_CREATE_TIME
from confluent_kafka.admin import ConfigResource

from bench import dbclock
from bench.harness import percentiles

READ_TIMEOUT_S = 60.0


def topic_timestamp_type(topic: str) -> str:
    """The topic's message.timestamp.type (CreateTime unless someone changed it)."""
    from events.core.kafka import build_admin

    admin = build_admin()  # held until the answer: a freed client cancels it
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    future = admin.describe_configs([resource])[resource]
    return future.result(timeout=10)["message.timestamp.type"].value


def produce_times(topic: str, reservation_ids: set[int]) -> dict[str, Any]:
    """Read `topic` from its beginning to the end offsets as of now; return the first
    CreateTime (ms since the epoch) of each of `reservation_ids`' SeatReserved messages.

    Partitions are assigned, not subscribed: no group joins, nothing is committed.
    Messages of other reservations (earlier phases) are read and left out; a message
    seen twice (at least once delivery) counts at its first produce.
    """
    from events.core.kafka import OFFSET_BEGINNING, TopicPartition, build_consumer

    consumer = build_consumer(f"bench-legs-{uuid.uuid4().hex[:8]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            if high > low:
                ends[partition] = high
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(ends)]
        )
        first: dict[int, int] = {}
        read = duplicates = other_type = 0
        deadline = time.monotonic() + READ_TIMEOUT_S
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    raise RuntimeError(f"reading {topic}: {message.error()}")
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
                read += 1
                kind, stamp = message.timestamp()
                reservation = orjson.loads(message.value())["data"]["reservation_id"]
                if reservation not in reservation_ids:
                    continue
                if kind != TIMESTAMP_CREATE_TIME:
                    other_type += 1
                elif reservation in first:
                    duplicates += 1
                    first[reservation] = min(first[reservation], stamp)
                else:
                    first[reservation] = stamp
    finally:
        consumer.close()
    return {
        "produced_ms": first,
        "messages_read": read,
        "duplicates": duplicates,
        "not_create_time": other_type,
        "partitions_unfinished": len(ends),
    }


def phase_legs(after_id: int, topic: str) -> dict[str, Any]:
    """The legs of the reservations after `after_id` that were handled, by reservation
    id: `legs_ms` (percentiles of each leg) and `legs_join` (what the join found)."""
    rows = dbclock.reservation_commit_times(after_id)
    found = produce_times(topic, {r for r, _, _ in rows})
    produced = found.pop("produced_ms")
    to_produce, to_handler = [], []
    for reservation, business_ms, handler_ms in rows:
        if reservation in produced:
            to_produce.append(produced[reservation] - business_ms)
            to_handler.append(handler_ms - produced[reservation])
    return {
        "legs_ms": {
            "commit_to_produce": percentiles(to_produce),
            "produce_to_handler_commit": percentiles(to_handler),
        },
        "legs_join": {
            "reservations": len(rows),
            "joined": len(to_produce),
            **found,
            # Below -1 would mean the clocks disagree (CreateTime is truncated to ms).
            "min_ms": {
                "commit_to_produce": round(min(to_produce, default=0.0), 2),
                "produce_to_handler_commit": round(min(to_handler, default=0.0), 2),
            },
        },
    }
