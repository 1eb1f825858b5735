"""The audit log: one structured line per event published, processed, retried or
dead-lettered, on the `events.audit` logger.

Entry point: `audit(outcome, ...)`. Settings give that logger the JSON formatter of
`config.logging`, so each line is one JSON object carrying event id, type, topic,
partition, offset and trace id. The fields travel as `extra` attributes of the record
and are only serialised if a handler emits the record, which keeps a disabled audit
log (level above INFO) down to one `isEnabledFor` check per event. Dead letters are
logged at WARNING, so EVENTS_AUDIT_LOG_LEVEL=WARNING keeps only those.
"""

from __future__ import annotations

import logging
import uuid

logger = logging.getLogger("events.audit")

PUBLISHED = "published"
PROCESSED = "processed"
DUPLICATE = "duplicate"
RETRIED = "retried"
DEAD_LETTERED = "dead_lettered"


def enabled() -> bool:
    return logger.isEnabledFor(logging.INFO)


def audit(
    outcome: str,
    *,
    event_id: uuid.UUID | str | None,
    event_type: str | None,
    topic: str,
    partition: int,
    offset: int,
    trace_id: str | None,
    handler: str | None = None,
    attempt: int | None = None,
    error: BaseException | None = None,
    level: int = logging.INFO,
) -> None:
    """Log one audit line for one event (does nothing if the logger is disabled)."""
    if not logger.isEnabledFor(level):
        return
    extra = {
        "event_outcome": outcome,
        "event_id": str(event_id) if event_id is not None else None,
        "event_type": event_type,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "trace_id": trace_id,
    }
    if handler is not None:
        extra["handler"] = handler
    if attempt is not None:
        extra["attempt"] = attempt
    if error is not None:
        extra["error"] = f"{type(error).__name__}: {error}"
    # makeRecord + handle, not logger.log: log() walks the stack to find the caller's
    # file and line for every record, the larger part of an audit line's cost, and an
    # audit line's origin is always this function.
    logger.handle(
        logger.makeRecord(
            logger.name, level, __file__, 0, "event %s", (outcome,), None, extra=extra
        )
    )
