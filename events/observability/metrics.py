"""Prometheus metrics of the pipeline, defined once and shared by every process.

Every long-running process serves its own: the relay and each consumer process on their
--metrics-port (consumer child n on port + n), the web process on /metrics and the
Celery worker on CELERY_METRICS_PORT. Where one service runs several Python processes
(gunicorn workers, Celery's prefork pool) PROMETHEUS_MULTIPROC_DIR switches
prometheus_client to multiprocess mode and `registry()` aggregates them. Gauges say how
they combine across processes (`multiprocess_mode`); it is ignored otherwise.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

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
    "Time from producing a batch to committing the broker's answers for its rows.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# The outbox gauges come from one process only, the Celery task that refreshes them
# (events.maintenance.housekeeping.pipeline_gauges_refresh, on beat's schedule): it
# reports while the relay is down, stuck or only a standby, which is when a growing
# backlog matters, and its count never runs on the relay's connection.
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog_events",
    "Outbox rows not yet sent (parked rows excluded).",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unsent_age_seconds",
    "Age of the oldest unsent outbox row.",
    multiprocess_mode="mostrecent",
)
OUTBOX_PARKED_ROWS = Gauge(
    "outbox_parked_events",
    "Outbox rows currently parked.",
    multiprocess_mode="mostrecent",
)
RELAY_IS_LEADER = Gauge(
    "outbox_relay_leader", "1 while this relay process holds the leader lock."
)
RELAY_SHARDS_LED = Gauge(
    "outbox_relay_shards_led",
    "Outbox shards this relay process leads (OUTBOX_RELAY_SHARDS divides the outbox).",
)
RELAY_RECONNECTS = Counter(
    "outbox_relay_reconnects_total",
    "Times the relay lost its database connection (and leadership) and reconnected.",
)
# Liveness: set on every loop iteration (also while a standby waits for the lock). A
# health check compares it with the clock (python -m config.healthcheck).
RELAY_HEARTBEAT = Gauge(
    "outbox_relay_last_loop_timestamp_seconds",
    "Unix time of the relay loop's latest iteration.",
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
CONSUMER_HEARTBEAT = Gauge(
    "consumer_last_loop_timestamp_seconds",
    "Unix time of the consumer loop's latest iteration.",
)

# Housekeeping (Celery): what the periodic tasks measured and removed.
DEAD_LETTERS = Gauge(
    "dead_letters",
    "Stored dead letters by status and original topic.",
    ["status", "topic"],
    multiprocess_mode="mostrecent",
)
PRUNED_ROWS = Counter(
    "housekeeping_pruned_rows_total",
    "Rows deleted by the retention tasks.",
    ["table"],
)


def registry() -> CollectorRegistry:
    """The registry to expose: all processes of this service in multiprocess mode,
    else this process's default registry."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected
