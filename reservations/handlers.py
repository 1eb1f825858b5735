"""Kafka handlers of the reservations app: what used to be in-process listeners.

Each is a plain function registered per stream; the consumer runner gives it the inbox
row, the transaction, retries and dead letters (see events.core.registry). The notifying
handlers take whole batches, so a burst of events costs one insert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.core.delivery import Delivery
from events.core.registry import handler
from events.core.types import PoisonMessage
from http_api.errors import NotFound
from reservations.events import (
    ReservationCancelled,
    ReservationCreated,
    SeatHoldExpired,
    SeatReserved,
)
from reservations.models import NotificationKind
from reservations.notifications import NewNotification, notification_create_many
from reservations.services import reservation_complete


@handler("seat-reserved", events=[SeatReserved])
def complete_reservation(delivery: Delivery[SeatReserved]) -> None:
    """The report's ReservationEventListener.handleSeat: PENDING -> RESERVED."""
    event = delivery.event
    try:
        reservation_complete(reservation_id=event.reservation_id)
    except NotFound as exc:
        raise PoisonMessage(
            f"reservation {event.reservation_id} does not exist"
        ) from exc


def _notify_all(
    deliveries: list[Delivery[Any]],
    kind: NotificationKind,
    message: Callable[[Any], str],
) -> None:
    notification_create_many(
        notifications=[
            NewNotification(
                user_id=e.event.user_id,
                kind=kind,
                message=message(e.event),
                event_id=e.event_id,
            )
            for e in deliveries
        ]
    )


@handler("reservation", events=[ReservationCreated], batch=True)
def notify_reservation_created(
    deliveries: list[Delivery[ReservationCreated]],
) -> None:
    _notify_all(
        deliveries,
        NotificationKind.RESERVATION_CREATED,
        lambda e: f"Seat {e.seat_number} is held for you until {e.hold_expires_at}.",
    )


@handler("reservation", events=[ReservationCancelled], batch=True)
def notify_reservation_cancelled(
    deliveries: list[Delivery[ReservationCancelled]],
) -> None:
    _notify_all(
        deliveries,
        NotificationKind.RESERVATION_CANCELLED,
        lambda e: f"Reservation {e.reservation_id} was cancelled.",
    )


@handler("seat-hold-expired", events=[SeatHoldExpired], batch=True)
def notify_hold_expired(deliveries: list[Delivery[SeatHoldExpired]]) -> None:
    _notify_all(
        deliveries,
        NotificationKind.HOLD_EXPIRED,
        lambda e: (
            f"Your hold on reservation {e.reservation_id} expired; "
            "the seat is free again."
        ),
    )
