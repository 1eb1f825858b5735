"""The one module that imports confluent_kafka: client factories and their settings.

Every Kafka client in the project is built here, so the delivery guarantees (idempotent
producer with acks=all, manual offset commits, Java-compatible key partitioning) are set
in one place. Other modules use the factories and the names re-exported below.
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from events.core.conf import pipeline_settings

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "AdminClient",
    "Consumer",
    "KafkaError",
    "KafkaException",
    "Message",
    "NewTopic",
    "Producer",
    "Record",
    "TopicPartition",
    "build_admin",
    "build_consumer",
    "build_producer",
    "missing_topics",
]


class Record(Protocol):
    """A consumed message that is not an error event: what consumers process.

    confluent_kafka types every accessor of `Message` as optional, because an error
    event has no topic or offset; the consumer loop drops error events before anything
    else sees a batch, so everything after it reads records.
    """

    def topic(self) -> str: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> list[tuple[str, bytes]] | None: ...

    def timestamp(self) -> tuple[int, int]: ...


# Errors for which sending the same message again can never succeed: the relay parks the
# row instead of retrying it forever. Everything else (timeouts, broker down, leader
# changes) is retried.
PERMANENT_PRODUCE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG,
    }
)


# librdkafka waits up to 10 s between attempts to reach a broker that went away, so a
# broker back after a restart sat unused for up to 10 s (make chaos shows it). A 1 s
# cap costs a connection attempt a second per client while a broker is down.
RECONNECT_BACKOFF = {"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000}


def producer_config(**overrides: Any) -> dict[str, Any]:
    conf = pipeline_settings()
    config: dict[str, Any] = {
        "bootstrap.servers": conf.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        # Same partition for a key as the Java client (murmur2), so Java and Python
        # producers of one topic agree on where a key lives.
        "partitioner": "murmur2_random",
        # No waiting to fill a batch: the relay hands over whole batches anyway, and a
        # linger adds its wait to every event's latency without raising the drain.
        "linger.ms": 0,
        "compression.type": "lz4",
        "delivery.timeout.ms": 30_000,
        "queue.buffering.max.messages": 200_000,
        **RECONNECT_BACKOFF,
    }
    config.update(overrides)
    return config


def build_producer(**overrides: Any) -> Producer:
    return Producer(producer_config(**overrides))


def build_consumer(group_id: str, **overrides: Any) -> Consumer:
    conf = pipeline_settings()
    config: dict[str, Any] = {
        "bootstrap.servers": conf.bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "group.protocol": conf.group_protocol,
        **RECONNECT_BACKOFF,
    }
    if conf.group_protocol == "classic":
        config["partition.assignment.strategy"] = "cooperative-sticky"
    else:
        # A runner subscribes to main and retry topics. The broker's default "uniform"
        # assignor balances the partition count over all of them, and could hand a
        # joining member only retry partitions; "range" spreads each topic's partitions
        # over the members, so every member gets a share of the main topics.
        config["group.remote.assignor"] = "range"
    config.update(overrides)
    return Consumer(config)


def build_admin(**overrides: Any) -> AdminClient:
    conf = pipeline_settings()
    return AdminClient({"bootstrap.servers": conf.bootstrap_servers, **overrides})


def missing_topics(names: list[str], *, timeout: float = 10.0) -> list[str]:
    """Return which of `names` do not exist on the broker (raises if it is unreachable)."""
    metadata = build_admin().list_topics(timeout=timeout)
    return [name for name in names if name not in metadata.topics]
