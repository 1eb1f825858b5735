"""Prometheus metrics of the pipeline, defined once and shared by every process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PUBLISHED = Counter(
    "outbox_events_published_total",
    "Outbox rows acknowledged by the broker and marked sent.",
    ["topic"],
)
OUTBOX_PARKED = Counter(
    "outbox_events_parked_total",
    "Outbox rows the broker refused for good, parked for an operator.",
    ["topic"],
)
OUTBOX_SEND_ERRORS = Counter(
    "outbox_send_errors_total",
    "Retriable delivery failures; the rows stay pending and are sent again.",
)
OUTBOX_BATCH_SECONDS = Histogram(
    "outbox_relay_batch_seconds",
    "Time from fetching a batch to marking its acknowledged rows sent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog_events", "Outbox rows not yet sent (parked rows excluded)."
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox row."
)
OUTBOX_PARKED_ROWS = Gauge("outbox_parked_events", "Outbox rows currently parked.")
RELAY_IS_LEADER = Gauge(
    "outbox_relay_leader", "1 while this relay process holds the leader lock."
)

CONSUMED = Counter(
    "consumer_messages_consumed_total", "Messages read from Kafka.", ["topic"]
)
PROCESSED = Counter(
    "consumer_events_processed_total",
    "Events a handler processed and committed.",
    ["topic", "handler"],
)
DUPLICATES = Counter(
    "consumer_events_duplicate_total",
    "Redelivered events the inbox recognised and skipped.",
    ["topic", "handler"],
)
RETRIED = Counter(
    "consumer_events_retried_total",
    "Failed handler runs scheduled for another attempt.",
    ["topic", "handler"],
)
DEAD_LETTERED = Counter(
    "consumer_events_dead_lettered_total",
    "Events sent to a dead-letter topic.",
    ["topic", "handler"],
)
HANDLER_SECONDS = Histogram(
    "consumer_handler_seconds",
    "Time spent in a handler (successful or not).",
    ["handler"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
CONSUMER_LAG = Gauge(
    "consumer_lag_messages",
    "High watermark minus the consumer's position, per partition.",
    ["topic", "partition"],
)
DLQ_STORM_PAUSES = Counter(
    "consumer_dlq_storm_pauses_total",
    "Times the consumer paused because dead letters exceeded the configured rate.",
)
