"""Kafka handlers of the reservations app: what used to be in-process listeners.

Each is a plain function of one event; the consumer runner gives it the inbox row, the
transaction, retries and dead letters (see events.registry).
"""

from __future__ import annotations

from events.dispatch import current_event_id
from events.registry import handler
from events.types import PoisonMessage
from reservations.errors import NotFound
from reservations.events import (
    ReservationCancelled,
    ReservationCreated,
    SeatHoldExpired,
    SeatReserved,
)
from reservations.services import notification_create, reservation_complete


@handler("seat-reserved", events=[SeatReserved])
def complete_reservation(event: SeatReserved) -> None:
    """The report's ReservationEventListener.handleSeat: PENDING -> RESERVED."""
    try:
        reservation_complete(reservation_id=event.reservation_id)
    except NotFound as exc:
        raise PoisonMessage(
            f"reservation {event.reservation_id} does not exist"
        ) from exc


@handler("reservation", events=[ReservationCreated])
def notify_reservation_created(event: ReservationCreated) -> None:
    notification_create(
        user_id=event.user_id,
        kind="reservation_created",
        message=f"Seat {event.seat_number} is held for you until {event.hold_expires_at}.",
        event_id=current_event_id(),
    )


@handler("reservation", events=[ReservationCancelled])
def notify_reservation_cancelled(event: ReservationCancelled) -> None:
    notification_create(
        user_id=event.user_id,
        kind="reservation_cancelled",
        message=f"Reservation {event.reservation_id} was cancelled.",
        event_id=current_event_id(),
    )


@handler("seat-hold-expired", events=[SeatHoldExpired])
def notify_hold_expired(event: SeatHoldExpired) -> None:
    notification_create(
        user_id=event.user_id,
        kind="hold_expired",
        message=f"Your hold on reservation {event.reservation_id} expired; "
        "the seat is free again.",
        event_id=current_event_id(),
    )
