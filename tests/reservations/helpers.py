"""Small assertions shared by the reservations and payments tests."""

from __future__ import annotations

from events.core.conf import pipeline_settings
from events.models import OutboxEvent


def topic(stream: str) -> str:
    return pipeline_settings().topic(stream)


def outbox(event_type: str | None = None) -> list[OutboxEvent]:
    rows = OutboxEvent.objects.order_by("id")
    if event_type is not None:
        rows = rows.filter(event_type=event_type)
    return list(rows)


def outbox_types() -> list[str]:
    return [row.event_type for row in outbox()]
