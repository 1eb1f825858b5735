"""Events the payments app publishes through the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from events.core.types import Event


@dataclass(frozen=True, kw_only=True)
class PaymentCompleted(Event):
    """A reservation was paid from the wallet; the handler confirms it (ticket).

    Keyed by reservation id, like the reservation's other events.
    """

    event_type: ClassVar[str] = "PaymentCompleted"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "payment-complete"
    aggregate_type: ClassVar[str] = "reservation"

    payment_id: int
    reservation_id: int
    seat_id: int
    performance_id: int
    user_id: int
    amount: int  # wallet points
    paid_at: str  # ISO 8601

    @property
    def aggregate_id(self) -> str:
        return str(self.reservation_id)
