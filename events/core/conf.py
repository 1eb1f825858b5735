"""Pipeline settings resolved once from Django settings into a frozen value.

Nothing in the pipeline reads `django.conf.settings` directly: it asks `pipeline_settings()`,
so a misnamed setting fails in one place and tests that override settings get a fresh value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n (1-based) waits initial * multiplier**(n-1), capped."""

    attempts: int = 3
    initial_backoff_ms: int = 1000
    multiplier: float = 2.0
    max_backoff_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")

    def delay_ms(self, retry_number: int) -> int:
        """Return the delay before retry `retry_number` (1 = the first retry)."""
        delay = self.initial_backoff_ms * self.multiplier ** (retry_number - 1)
        return int(min(delay, self.max_backoff_ms))


RELAY_MODES = ("polling", "cdc")


@dataclass(frozen=True)
class PipelineSettings:
    bootstrap_servers: str
    topic_prefix: str
    streams: dict[str, str]
    dlq_streams: dict[str, str]
    partitions: int
    replication_factor: int
    retention_ms: int
    consumer_group: str
    group_protocol: str
    retry: RetryPolicy
    relay_batch_size: int
    relay_poll_interval: float
    relay_delivery_log: bool = False
    relay_shards: int = 1
    consumer_batch_size: int = 500
    consumer_threads: int = 1
    dlq_max_per_window: int = 100
    dlq_window_seconds: float = 60.0
    dlq_storm_pause_seconds: float = 30.0
    # "polling" (relay_outbox) or "cdc" (Debezium through Kafka Connect).
    relay_mode: str = "polling"
    max_message_bytes: int = 1_048_576
    cdc_connect_url: str = "http://127.0.0.1:8083"
    cdc_database_host: str = ""

    def __post_init__(self) -> None:
        if self.relay_mode not in RELAY_MODES:
            raise ValueError(
                f"OUTBOX_RELAY={self.relay_mode!r}: use one of {', '.join(RELAY_MODES)}"
            )
        if self.max_message_bytes < 1024:
            raise ValueError(
                f"OUTBOX_MAX_MESSAGE_BYTES={self.max_message_bytes} is too small "
                "(at least 1024)"
            )

    @property
    def cdc(self) -> bool:
        """Whether Debezium, not relay_outbox, sends the outbox (OUTBOX_RELAY=cdc)."""
        return self.relay_mode == "cdc"

    def topic(self, stream: str) -> str:
        """Return the topic name of a logical stream ("seat-reserved" -> its topic)."""
        try:
            return self.topic_prefix + self.streams[stream]
        except KeyError:
            raise KeyError(
                f"unknown event stream {stream!r}; known: {sorted(self.streams)}"
            ) from None

    def dlq_topic(self, stream: str) -> str:
        return self.topic_prefix + self.dlq_streams[stream]

    def retry_topic(self, stream: str, retry_number: int) -> str:
        """Return the topic that holds messages waiting for retry `retry_number`."""
        return f"{self.topic(stream)}-retry-{retry_number}"

    def retry_topics(self, stream: str) -> list[str]:
        return [self.retry_topic(stream, n) for n in range(1, self.retry.attempts)]

    def stream_of(self, topic: str) -> str | None:
        """Map any topic of a stream (main, retry or DLQ) back to the stream's name."""
        for stream in self.streams:
            if topic == self.topic(stream) or topic == self.dlq_topic(stream):
                return stream
            if topic.startswith(self.topic(stream) + "-retry-"):
                return stream
        return None

    def all_topics(self) -> list[str]:
        """Every topic the pipeline needs: main, retry and DLQ topics of each stream."""
        names: list[str] = []
        for stream in self.streams:
            names.append(self.topic(stream))
            names.extend(self.retry_topics(stream))
            names.append(self.dlq_topic(stream))
        return names


@functools.cache
def pipeline_settings() -> PipelineSettings:
    missing = set(settings.EVENT_TOPICS) ^ set(settings.EVENT_DLQ_TOPICS)
    if missing:
        raise ValueError(
            f"EVENT_TOPICS and EVENT_DLQ_TOPICS differ on {sorted(missing)}"
        )
    return PipelineSettings(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        topic_prefix=settings.KAFKA_TOPIC_PREFIX,
        streams=dict(settings.EVENT_TOPICS),
        dlq_streams=dict(settings.EVENT_DLQ_TOPICS),
        partitions=settings.KAFKA_TOPIC_PARTITIONS,
        replication_factor=settings.KAFKA_REPLICATION_FACTOR,
        retention_ms=settings.KAFKA_TOPIC_RETENTION_MS,
        consumer_group=settings.KAFKA_CONSUMER_GROUP,
        group_protocol=settings.KAFKA_GROUP_PROTOCOL,
        retry=RetryPolicy(
            attempts=settings.EVENTS_RETRY_ATTEMPTS,
            initial_backoff_ms=settings.EVENTS_RETRY_BACKOFF_MS,
            multiplier=settings.EVENTS_RETRY_BACKOFF_MULTIPLIER,
            max_backoff_ms=settings.EVENTS_RETRY_BACKOFF_MAX_MS,
        ),
        relay_batch_size=settings.OUTBOX_RELAY_BATCH_SIZE,
        relay_poll_interval=settings.OUTBOX_RELAY_POLL_INTERVAL,
        relay_shards=settings.OUTBOX_RELAY_SHARDS,
        relay_delivery_log=settings.OUTBOX_DELIVERY_LOG,
        consumer_batch_size=settings.CONSUMER_BATCH_SIZE,
        consumer_threads=settings.CONSUMER_THREADS,
        dlq_max_per_window=settings.EVENTS_DLQ_MAX_PER_WINDOW,
        dlq_window_seconds=settings.EVENTS_DLQ_WINDOW_SECONDS,
        dlq_storm_pause_seconds=settings.EVENTS_DLQ_STORM_PAUSE_SECONDS,
        relay_mode=settings.OUTBOX_RELAY,
        max_message_bytes=settings.OUTBOX_MAX_MESSAGE_BYTES,
        cdc_connect_url=settings.CDC_CONNECT_URL,
        cdc_database_host=settings.CDC_DATABASE_HOST,
    )


def _clear_on_change(**_: object) -> None:
    pipeline_settings.cache_clear()


setting_changed.connect(_clear_on_change)
