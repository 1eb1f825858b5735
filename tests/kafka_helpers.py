"""Reading what really arrived on the broker, for assertions."""

from __future__ import annotations

import time
import uuid

from events.core.kafka import (
    Message,
    NewTopic,
    TopicPartition,
    build_admin,
    build_consumer,
)


def read_topic(
    topic: str, *, expected: int = 0, timeout: float = 30.0
) -> list[Message]:
    """Read every message of `topic`, from the beginning to the end of each partition.

    Waits until the partitions hold at least `expected` messages in all, then reads up to
    the high watermarks, so duplicates are read too. A throw-away consumer assigned to
    every partition sees everything, whoever else consumes the topic.
    """
    consumer = build_consumer(
        f"test-reader-{uuid.uuid4().hex}", **{"group.protocol": "classic"}
    )
    try:
        deadline = time.monotonic() + timeout
        # A topic created a moment ago may list no partitions yet (its leaders are
        # being elected): reading then would wait for nothing and return nothing.
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            metadata = consumer.list_topics(topic, timeout=10)
            described = metadata.topics.get(topic)
            ready = described is not None and described.error is None
            partitions = list(described.partitions) if ready else []
            if ready and any(
                p.error is not None or p.leader < 0
                for p in described.partitions.values()
            ):
                partitions = []
            if not partitions:
                time.sleep(0.1)

        def high_watermarks() -> dict[int, int]:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[
                    1
                ]
                for p in partitions
            }

        ends = high_watermarks()
        while sum(ends.values()) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            ends = high_watermarks()
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        done = {p for p, end in ends.items() if end == 0}
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None:
                    continue
                if message.offset() < ends[message.partition()]:
                    messages.append(message)
                if message.offset() + 1 >= ends[message.partition()]:
                    done.add(message.partition())
        return messages
    finally:
        consumer.close()


def header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key == name:
            return value.decode() if value is not None else None
    return None


def make_topic(name: str, partitions: int = 3, **config: str) -> str:
    """Create a topic for one test (the AdminClient must outlive its future)."""
    admin = build_admin()
    new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
    admin.create_topics([new])[name].result(timeout=30)
    return name
