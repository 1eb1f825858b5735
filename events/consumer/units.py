"""Units of work: one handler's work on one consumed message, and where it came from.

A consumed batch becomes a list of units in offset order (events.consumer.planning);
the executor runs them, the failure handler deals with the ones that fail, and the
progress tracker turns finished units into committable offsets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from events.core.delivery import Delivery
from events.core.headers import Origin, origin_of
from events.core.kafka import Record
from events.core.registry import HandlerSpec
from events.core.types import Envelope, Event
from events.observability import audit


# Coordinates and Unit are built for every consumed message: plain slotted dataclasses,
# because a frozen dataclass costs several times as much to build.
@dataclass(slots=True)
class Coordinates:
    """Where a unit's message was read, and which attempt of its handler this is."""

    topic: str
    partition: int
    offset: int
    attempt: int
    trace_id: str | None

    def next_attempt(self) -> Coordinates:
        return Coordinates(
            self.topic, self.partition, self.offset, self.attempt + 1, self.trace_id
        )


@dataclass(slots=True)
class Unit:
    """One handler's work on one message. `spec` is None for an undecodable message,
    whose `error` is set from the start."""

    message: Record
    stream: str
    headers: dict[str, str]
    where: Coordinates
    envelope: Envelope | None = None
    spec: HandlerSpec | None = None
    error: BaseException | None = None
    seq: int = 0  # which planned message this unit belongs to
    handler_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.handler_name = self.spec.name if self.spec else ""

    @property
    def origin(self) -> Origin:
        """Where the message was first consumed: only retries and dead letters ask."""
        where = self.where
        timestamp_type, timestamp_ms = self.message.timestamp()
        return origin_of(
            self.headers,
            where.topic,
            where.partition,
            where.offset,
            timestamp_ms,
            timestamp_type=timestamp_type,
        )

    def delivery(self) -> Delivery[Event]:
        """What the handler is given (see events.core.delivery)."""
        envelope = self.envelope
        assert envelope is not None, "an undecodable message has no delivery"
        where = self.where
        return Delivery(
            envelope.event,
            envelope,
            self.message.key(),
            where.topic,
            where.partition,
            where.offset,
            where.attempt,
            where.trace_id,
        )


def audit_unit(outcome: str, unit: Unit, error: BaseException | None = None) -> None:
    """Write the audit line of one unit's outcome (see events.observability.audit)."""
    audit.audit(
        outcome,
        event_id=unit.envelope.event_id if unit.envelope else None,
        event_type=unit.envelope.event_type if unit.envelope else None,
        topic=unit.where.topic,
        partition=unit.where.partition,
        offset=unit.where.offset,
        trace_id=unit.where.trace_id,
        handler=unit.handler_name or None,
        attempt=unit.where.attempt,
        error=error,
        level=logging.WARNING if outcome == audit.DEAD_LETTERED else logging.INFO,
    )
