"""Writing events: `publish` puts an event in the outbox inside the caller's transaction."""

from __future__ import annotations

from django.db import connection

from events.core import headers as headers_
from events.core.conf import pipeline_settings
from events.core.tracing import current_trace_id, new_trace_id
from events.core.types import Event, new_envelope
from events.models import OutboxEvent

# First key of the two-key advisory lock space used for per-key publish ordering.
PUBLISH_LOCK_CLASS = 7_001


class OutboxError(RuntimeError):
    """Publishing was attempted where it cannot be atomic."""


def publish(event: Event, *, headers: dict[str, str] | None = None) -> OutboxEvent:
    """Insert `event` into the outbox as part of the current transaction.

    Refuses to run outside `transaction.atomic()`: an event written in autocommit mode
    would be committed on its own, apart from the change it announces (a dual write).

    Takes a transaction-scoped advisory lock on (topic, key) before the row gets its id,
    so two transactions that publish for the same key commit in id order; the relay
    relies on that to keep per-key order without knowing commit timestamps.
    """
    if not connection.in_atomic_block:
        raise OutboxError(
            "events.publish() must be called inside transaction.atomic(), so that the "
            "event commits together with the change it announces"
        )
    conf = pipeline_settings()
    topic = conf.topic(event.stream)
    key = event.key
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            [PUBLISH_LOCK_CLASS, f"{topic}/{key}"],
        )
    event_id, envelope = new_envelope(event)
    all_headers = {
        headers_.EVENT_ID: str(event_id),
        headers_.EVENT_TYPE: event.event_type,
        headers_.SCHEMA_VERSION: str(event.version),
        headers_.TRACE_ID: current_trace_id() or new_trace_id(),
    }
    if headers:
        all_headers.update(headers)
    return OutboxEvent.objects.create(
        event_id=event_id,
        event_type=event.event_type,
        schema_version=event.version,
        topic=topic,
        key=key,
        payload=envelope,
        headers=all_headers,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
    )
