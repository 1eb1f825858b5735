"""What every handler receives: the typed event together with how and where it arrived.

One contract for single and batch handlers alike: a single handler gets one `Delivery`,
a batch handler a list of them. Everything a handler may need beyond the event's data
(its id for idempotent effects, the trace id, the Kafka coordinates, which attempt
this is) is on the object, so no handler reads pipeline state from context variables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from events.core.types import Envelope, Event

E = TypeVar("E", bound=Event, covariant=True)


# Built for every handler call: a plain slotted dataclass, because a frozen one costs
# several times as much to build.
@dataclass(slots=True)
class Delivery(Generic[E]):
    """One event as delivered to one handler."""

    event: E
    envelope: Envelope
    key: bytes | None
    topic: str
    partition: int
    offset: int
    attempt: int  # 1 for the first delivery, 2 for the first retry, ...
    trace_id: str | None

    @property
    def event_id(self) -> uuid.UUID:
        """The event's id: what an effect stores to be idempotent (see the inbox)."""
        return self.envelope.event_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at
