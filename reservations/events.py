"""Events the reservations app publishes through the outbox.

Seat events are keyed by seat id, so a seat's holds and expiries stay in order on one
partition; reservation events are keyed by reservation id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from events.core.types import Event


@dataclass(frozen=True, kw_only=True)
class SeatReserved(Event):
    """A seat was held for a reservation; the handler completes the reservation."""

    event_type: ClassVar[str] = "SeatReserved"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "seat-reserved"
    aggregate_type: ClassVar[str] = "seat"

    seat_id: int
    reservation_id: int
    performance_id: int
    user_id: int
    hold_expires_at: str  # ISO 8601

    @property
    def aggregate_id(self) -> str:
        return str(self.seat_id)


@dataclass(frozen=True, kw_only=True)
class ReservationCreated(Event):
    """The report's "ReservationEvent": a reservation now exists (state PENDING)."""

    event_type: ClassVar[str] = "ReservationCreated"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "reservation"
    aggregate_type: ClassVar[str] = "reservation"

    reservation_id: int
    seat_id: int
    seat_number: str
    performance_id: int
    user_id: int
    price: int  # wallet points
    status: str
    hold_expires_at: str  # ISO 8601

    @property
    def aggregate_id(self) -> str:
        return str(self.reservation_id)


@dataclass(frozen=True, kw_only=True)
class ReservationCancelled(Event):
    """The owner cancelled an unpaid reservation; its seat is available again."""

    event_type: ClassVar[str] = "ReservationCancelled"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "reservation"
    aggregate_type: ClassVar[str] = "reservation"

    reservation_id: int
    seat_id: int
    performance_id: int
    user_id: int
    cancelled_at: str  # ISO 8601

    @property
    def aggregate_id(self) -> str:
        return str(self.reservation_id)


@dataclass(frozen=True, kw_only=True)
class SeatHoldExpired(Event):
    """An unpaid hold ran out: the reservation is EXPIRED and the seat AVAILABLE."""

    event_type: ClassVar[str] = "SeatHoldExpired"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "seat-hold-expired"
    aggregate_type: ClassVar[str] = "seat"

    seat_id: int
    reservation_id: int
    performance_id: int
    user_id: int
    expired_at: str  # ISO 8601

    @property
    def aggregate_id(self) -> str:
        return str(self.seat_id)
