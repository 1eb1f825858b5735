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
