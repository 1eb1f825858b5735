"""Reading what really arrived on the broker, for assertions."""

from __future__ import annotations

import time
import uuid

from events.kafka import Message, TopicPartition, build_consumer


def read_topic(topic: str, *, expected: int, timeout: float = 30.0) -> list[Message]:
    """Read `topic` from the beginning until `expected` messages arrived or time runs out.

    Uses a throw-away consumer group assigned to every partition, so it sees everything
    no matter who else consumes the topic.
    """
    consumer = build_consumer(f"test-reader-{uuid.uuid4().hex}", **{"group.protocol": "classic"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
        return messages
    finally:
        consumer.close()


def header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key == name:
            return value.decode() if value is not None else None
    return None
