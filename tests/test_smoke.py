"""The foundation: the test run talks to the real PostgreSQL and the real Kafka broker."""

import uuid

import pytest
from django.db import connection

from events.core.kafka import build_producer
from tests.kafka_helpers import header, make_topic, read_topic

pytestmark = pytest.mark.django_db


def test_database_is_postgresql() -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        (version,) = cursor.fetchone()
    assert version.startswith("PostgreSQL")


def test_keyed_message_round_trips_through_the_broker(kafka_topics) -> None:
    topic = f"{kafka_topics.topic_prefix}smoke-{uuid.uuid4().hex[:6]}"
    make_topic(topic)
    producer = build_producer()
    delivered = []
    for _ in range(3):
        producer.produce(
            topic,
            key=b"seat-42",
            value=b'{"hello": "kafka"}',
            headers=[("trace_id", b"abc")],
            on_delivery=lambda err, msg: delivered.append((err, msg.partition())),
        )
    assert producer.flush(30) == 0
    assert [err for err, _ in delivered] == [None, None, None]
    # One key, one partition.
    assert len({partition for _, partition in delivered}) == 1

    messages = read_topic(topic, expected=3)
    assert [m.key() for m in messages] == [b"seat-42"] * 3
    assert messages[0].value() == b'{"hello": "kafka"}'
    assert header(messages[0], "trace_id") == "abc"
    assert messages[0].partition() == delivered[0][1]
