"""The project's producer against a 3-node cluster whose brokers are killed (kill -9).

The cluster is the one `KAFKA_NODES=3 infra/kafka/kafka.sh start` runs, in a home and on
ports of its own (brokers 39092/39094/39096, controllers one above each), so a developer's
cluster on 29092 and the single broker on 9092 are not touched. Every node is a combined
controller+broker: with two of three down the controller quorum is gone as well, so
nothing can be re-elected and the producer can only wait.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from events.core.kafka import Message, build_admin, build_producer
from events.core.topics import create_topics, delete_topics_with_prefix
from tests.conftest import ROOT
from tests.kafka_helpers import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

BASE_PORT = 39092
NODES = (1, 2, 3)
BOOTSTRAP = ",".join(f"127.0.0.1:{BASE_PORT + 2 * (n - 1)}" for n in NODES)


def cluster_ctl(*args: str) -> None:
    env = dict(
        os.environ,
        KAFKA_NODES="3",
        KAFKA_CLUSTER_HOME=str(ROOT / ".local/kafka-cluster-test"),
        KAFKA_CLUSTER_BASE_PORT=str(BASE_PORT),
    )
    subprocess.run(
        ["bash", str(ROOT / "infra/kafka/kafka.sh"), *args], check=True, env=env
    )


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[str]:
    """A 3-node cluster for this session; its nodes may be killed and restarted."""
    started = time.monotonic()
    cluster_ctl("start")
    print(f"3-node cluster started in {time.monotonic() - started:.1f} s")
    yield BOOTSTRAP
    cluster_ctl("stop")


class Deliveries:
    """Delivery reports of one producer, by the sequence number in each message."""

    def __init__(self) -> None:
        self.acked: dict[int, tuple[int, int]] = {}
        self.failed: dict[int, str] = {}
        self.ack_times: dict[int, float] = {}

    def __call__(self, err: Any, message: Message) -> None:
        seq = int(message.value())
        if err is not None:
            self.failed[seq] = str(err)
        else:
            self.acked[seq] = (message.partition(), message.offset())
            self.ack_times[seq] = time.monotonic()


def partition_leaders(topic: str) -> dict[int, int]:
    metadata = build_admin().list_topics(topic, timeout=10)
    return {p.id: p.leader for p in metadata.topics[topic].partitions.values()}


def test_acknowledged_messages_survive_brokers_killed_one_then_two(
    kafka_cluster: str, settings: Any
) -> None:
    from confluent_kafka.admin import ConfigResource

    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_cluster
    settings.KAFKA_REPLICATION_FACTOR = 3
    prefix = f"{settings.KAFKA_TOPIC_PREFIX}cluster-{uuid.uuid4().hex[:6]}-"
    topic = f"{prefix}chaos"
    create_topics([topic])

    admin = build_admin()
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert [len(p.replicas) for p in described.partitions.values()] == [3, 3, 3]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"

    deliveries = Deliveries()
    # Outlasts the outage below: a message that times out would be reported failed
    # although it may still be written, and the idempotent producer would move on.
    producer = build_producer(**{"delivery.timeout.ms": 120_000})

    def send(seqs: range) -> None:
        for seq in seqs:
            key = f"key-{seq % 6}"
            producer.produce(topic, key=key, value=str(seq), on_delivery=deliveries)
            producer.poll(0)

    send(range(0, 100))
    assert producer.flush(30) == 0
    assert set(deliveries.acked) == set(range(100)) and not deliveries.failed

    # One node down, the leader of partition 0: every message is still acknowledged,
    # once the controller has fenced it and moved its partitions.
    first = partition_leaders(topic)[0]
    cluster_ctl("node-kill", str(first))
    killed_at = time.monotonic()
    send(range(100, 200))
    assert producer.flush(60) == 0
    resumed_after = max(deliveries.ack_times.values()) - killed_at
    assert set(deliveries.acked) == set(range(200)), deliveries.failed
    assert not deliveries.failed
    assert first not in set(partition_leaders(topic).values())

    # Two nodes down: no quorum, no in-sync pair; nothing is acknowledged (and nothing
    # fails: the producer keeps the messages and retries).
    second = next(n for n in NODES if n != first)
    cluster_ctl("node-kill", str(second))
    send(range(200, 300))
    assert producer.flush(5) > 0
    assert set(deliveries.acked) == set(range(200))
    assert not deliveries.failed

    # Both nodes back: the waiting messages are acknowledged, each once, in order.
    # (A node that crashed rejoins once the controller has expired its old session.)
    restarted_at = time.monotonic()
    cluster_ctl("node-start", str(second), str(first))
    assert producer.flush(90) == 0
    delivered_after = max(deliveries.ack_times.values()) - restarted_at
    assert not deliveries.failed
    assert set(deliveries.acked) == set(range(300))

    messages = read_topic(topic, expected=300, timeout=30)
    seqs = [int(m.value()) for m in messages]
    assert sorted(seqs) == list(range(300)), "lost or duplicated messages"
    for message in messages:
        position = (message.partition(), message.offset())
        assert deliveries.acked[int(message.value())] == position
    by_partition: dict[int, list[int]] = {}
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_partition.setdefault(message.partition(), []).append(int(message.value()))
    for partition, in_log in by_partition.items():
        assert in_log == sorted(in_log), f"partition {partition} out of order"

    print(
        f"one node killed: producing resumed after {resumed_after:.1f} s; "
        f"two restarted: the waiting messages acknowledged {delivered_after:.1f} s "
        "after the restart began"
    )
    delete_topics_with_prefix(prefix)
