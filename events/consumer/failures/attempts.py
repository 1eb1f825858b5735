"""One FailedAttempt row per failure: the history operators read next to a dead letter."""

from __future__ import annotations

from datetime import UTC, datetime

from events.consumer.units import Unit
from events.models import FailedAttempt

MAX_MESSAGE_CHARS = 2000


def record_failure(
    unit: Unit,
    error: BaseException,
    outcome: str,
    next_attempt_ms: int | None = None,
) -> None:
    """Store that `unit` failed with `error` and what happens next (`outcome`)."""
    assert unit.envelope is not None
    FailedAttempt.objects.create(
        event_id=unit.envelope.event_id,
        handler=unit.handler_name,
        topic=unit.where.topic,
        partition=unit.where.partition,
        offset=unit.where.offset,
        attempt=unit.where.attempt,
        exception_class=f"{type(error).__module__}.{type(error).__qualname__}",
        message=str(error)[:MAX_MESSAGE_CHARS],
        outcome=outcome,
        next_attempt_at=(
            datetime.fromtimestamp(next_attempt_ms / 1000, tz=UTC)
            if next_attempt_ms
            else None
        ),
    )
