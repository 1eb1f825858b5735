"""The event pipeline: typed events, the transactional outbox, the relay and the consumers.

Writers call `events.publish(event)` inside `transaction.atomic()`; the event row commits
with the business change or not at all. `manage.py relay_outbox` moves committed rows to
Kafka; `manage.py run_consumers` hands them to the handlers registered per topic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.core.types import Event
    from events.models import OutboxEvent


def publish(event: Event, *, headers: dict[str, str] | None = None) -> OutboxEvent:
    """Write `event` to the outbox in the caller's transaction (see events.core.outbox.publish)."""
    from events.core.outbox import publish as _publish

    return _publish(event, headers=headers)
