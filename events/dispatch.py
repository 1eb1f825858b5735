"""Running handlers on one decoded event: inbox row and handler in one transaction.

The caller holds the surrounding transaction (one per batch); each handler runs in a
savepoint of it, so one handler's failure rolls back only its own effects and inbox row.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import time
import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from events import metrics
from events.registry import HandlerSpec
from events.tracing import reset_trace_id, set_trace_id
from events.types import Envelope, PoisonMessage

logger = logging.getLogger(__name__)

INBOX_INSERT_SQL = """
    INSERT INTO events_inboxentry
        (event_id, handler, topic, partition, "offset", attempt, processed_at)
    VALUES (%s, %s, %s, %s, %s, %s, now())
    ON CONFLICT (event_id, handler) DO NOTHING
    RETURNING id
"""

# Exceptions no retry can fix: the event goes to the DLQ at once.
POISON_EXCEPTIONS: tuple[type[BaseException], ...] = (PoisonMessage, ValidationError)


_current_event_id: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar(
    "current_event_id", default=None
)


def current_event_id() -> uuid.UUID | None:
    """The id of the event the running handler was given (None outside handlers)."""
    return _current_event_id.get()


class Result(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True)
class HandlerOutcome:
    handler: HandlerSpec
    result: Result
    error: BaseException | None = None

    @property
    def poison(self) -> bool:
        return isinstance(self.error, POISON_EXCEPTIONS)


@dataclass(frozen=True)
class Coordinates:
    topic: str
    partition: int
    offset: int
    attempt: int
    trace_id: str | None


def run_handler(
    spec: HandlerSpec, envelope: Envelope, where: Coordinates
) -> HandlerOutcome:
    """Run `spec` on the event unless its inbox says it already did.

    The inbox row is inserted first, in the same savepoint as the handler's work: if
    the handler fails, both roll back; if another consumer is handling the same event
    right now, the insert waits for it and then finds the row (a duplicate).
    """
    token = set_trace_id(where.trace_id)
    event_token = _current_event_id.set(envelope.event_id)
    started = time.perf_counter()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    INBOX_INSERT_SQL,
                    [
                        envelope.event_id,
                        spec.name,
                        where.topic,
                        where.partition,
                        where.offset,
                        where.attempt,
                    ],
                )
                if cursor.fetchone() is None:
                    metrics.DUPLICATES.labels(where.topic, spec.name).inc()
                    return HandlerOutcome(spec, Result.DUPLICATE)
            spec.func(envelope.event)
    except Exception as exc:  # noqa: BLE001 - every handler failure is classified
        logger.warning(
            "handler %s failed on %s %s (attempt %d): %s: %s",
            spec.name,
            envelope.event_type,
            envelope.event_id,
            where.attempt,
            type(exc).__name__,
            exc,
        )
        return HandlerOutcome(spec, Result.FAILED, exc)
    finally:
        metrics.HANDLER_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
        reset_trace_id(token)
        _current_event_id.reset(event_token)
    metrics.PROCESSED.labels(where.topic, spec.name).inc()
    return HandlerOutcome(spec, Result.PROCESSED)
