"""Every write of the reservations app, each in one transaction with its events.

Lock order, kept by every service so two of them never wait on each other in a
cycle: reservation row, then seat row (then, in payments, the wallet row).
`reservation_create` locks only the seat, which it finds free or gives up on.

The handler-facing services (`reservation_complete`, `reservation_confirm`,
`notification_create`) are safe to call twice: Kafka delivers at least once.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

import events
from http_api.errors import NotFound
from reservations.errors import (
    AlreadyPaid,
    HoldExpired,
    InvalidState,
    SeatUnavailable,
)
from reservations.events import (
    ReservationCancelled,
    ReservationCreated,
    SeatHoldExpired,
    SeatReserved,
)
from reservations.models import (
    HOLDING_STATUSES,
    Reservation,
    ReservationStatus,
    Seat,
    SeatStatus,
    Ticket,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

DEFAULT_HOLD_SECONDS = 300
EXPIRE_BATCH_SIZE = 500
ONE_ACTIVE_PER_SEAT = "reservation_one_active_per_seat"


def reservation_hold_duration() -> timedelta:
    """Return how long a seat stays HELD for an unpaid reservation."""
    seconds = getattr(settings, "RESERVATION_HOLD_SECONDS", DEFAULT_HOLD_SECONDS)
    return timedelta(seconds=seconds)


@transaction.atomic
def reservation_create(
    *, user: User, seat_id: int, now: datetime | None = None
) -> Reservation:
    """Hold an AVAILABLE seat for `user`; publish SeatReserved and ReservationCreated.

    The seat row lock serialises concurrent attempts on one seat: the first one finds
    it AVAILABLE, the others find it HELD and get `SeatUnavailable`. A seat already
    taken is refused before the lock, from a plain read: a burst for one seat would
    otherwise queue every request on that row lock, one at a time, only to be refused.
    """
    now = now or timezone.now()
    seat = _lock_available_seat(seat_id, now)
    try:
        with transaction.atomic():
            reservation = Reservation.objects.create(
                user=user,
                seat=seat,
                price=seat.price,
                hold_expires_at=now + reservation_hold_duration(),
            )
    except IntegrityError as exc:
        if _constraint_name(exc) != ONE_ACTIVE_PER_SEAT:
            raise
        raise SeatUnavailable(extra={"seat_id": seat.pk}) from exc
    seat.status = SeatStatus.HELD
    seat.save(update_fields=["status"])

    _publish_hold(seat, reservation, user)
    logger.info("seat %s held by reservation %s", seat.pk, reservation.pk)
    return reservation


def _lock_available_seat(seat_id: int, now: datetime) -> Seat:
    """The seat, locked for update, if it can be held now; else the error to answer."""
    taken = (
        Seat.objects.filter(pk=seat_id)
        .exclude(status=SeatStatus.AVAILABLE)
        .values_list("status", flat=True)
        .first()
    )
    if taken is not None:
        raise SeatUnavailable(extra={"seat_id": seat_id, "seat_status": taken})
    try:
        seat = (
            Seat.objects.select_for_update(of=("self",))
            .select_related("performance")
            .get(pk=seat_id)
        )
    except Seat.DoesNotExist:
        raise NotFound("Seat not found.", extra={"seat_id": seat_id}) from None
    if seat.performance.starts_at <= now:
        raise InvalidState(
            "The performance has already started.",
            extra={"performance_id": seat.performance_id},
        )
    if seat.status != SeatStatus.AVAILABLE:
        raise SeatUnavailable(extra={"seat_id": seat.pk, "seat_status": seat.status})
    return seat


def _publish_hold(seat: Seat, reservation: Reservation, user: User) -> None:
    hold_expires_at = reservation.hold_expires_at.isoformat()
    events.publish(
        SeatReserved(
            seat_id=seat.pk,
            reservation_id=reservation.pk,
            performance_id=seat.performance_id,
            user_id=user.pk,
            hold_expires_at=hold_expires_at,
        )
    )
    events.publish(
        ReservationCreated(
            reservation_id=reservation.pk,
            seat_id=seat.pk,
            seat_number=seat.number,
            performance_id=seat.performance_id,
            user_id=user.pk,
            price=reservation.price,
            status=reservation.status,
            hold_expires_at=hold_expires_at,
        )
    )


@transaction.atomic
def reservation_cancel(
    *, user: User, reservation_id: int, now: datetime | None = None
) -> Reservation:
    """Cancel the user's unpaid reservation, free its seat, publish the cancellation."""
    now = now or timezone.now()
    reservation = _reservation_lock(reservation_id=reservation_id, user=user)
    if reservation.paid_at is not None:
        raise AlreadyPaid(
            "A paid reservation cannot be cancelled.",
            extra={"reservation_id": reservation.pk},
        )
    if reservation.status not in HOLDING_STATUSES:
        raise InvalidState(
            f"A {reservation.status} reservation cannot be cancelled.",
            extra={"reservation_id": reservation.pk, "status": reservation.status},
        )
    seat = Seat.objects.select_for_update().get(pk=reservation.seat_id)
    if seat.status == SeatStatus.HELD:
        seat.status = SeatStatus.AVAILABLE
        seat.save(update_fields=["status"])
    reservation.status = ReservationStatus.CANCELLED
    reservation.cancelled_at = now
    reservation.save(update_fields=["status", "cancelled_at", "updated_at"])
    events.publish(
        ReservationCancelled(
            reservation_id=reservation.pk,
            seat_id=seat.pk,
            performance_id=seat.performance_id,
            user_id=reservation.user_id,
            cancelled_at=now.isoformat(),
        )
    )
    return reservation


def seat_hold_expire_due(*, now: datetime | None = None) -> int:
    """Expire every unpaid hold due at `now`; return how many this call expired.

    Runs in batches, one transaction each. `SKIP LOCKED` hands every due reservation
    to exactly one caller, so concurrent runs (two beat workers, a slow previous run)
    never expire a hold twice nor publish SeatHoldExpired twice; a reservation locked
    by a payment in flight is skipped and, if still unpaid, taken by the next run.
    """
    now = now or timezone.now()
    total = 0
    while True:
        expired = _hold_expire_batch(now=now, limit=EXPIRE_BATCH_SIZE)
        total += expired
        if expired < EXPIRE_BATCH_SIZE:
            break
    if total:
        logger.info("expired %d seat holds", total)
    return total


@transaction.atomic
def _hold_expire_batch(*, now: datetime, limit: int) -> int:
    due = list(
        Reservation.objects.select_for_update(skip_locked=True)
        .filter(
            status__in=HOLDING_STATUSES,
            paid_at__isnull=True,
            hold_expires_at__lte=now,
        )
        .order_by("hold_expires_at", "id")[:limit]
    )
    if not due:
        return 0
    seats = {
        seat.pk: seat
        for seat in Seat.objects.select_for_update()
        .filter(pk__in=[r.seat_id for r in due])
        .order_by("pk")
    }
    Reservation.objects.filter(pk__in=[r.pk for r in due]).update(
        status=ReservationStatus.EXPIRED, expired_at=now, updated_at=now
    )
    Seat.objects.filter(pk__in=list(seats), status=SeatStatus.HELD).update(
        status=SeatStatus.AVAILABLE
    )
    for reservation in due:
        events.publish(
            SeatHoldExpired(
                seat_id=reservation.seat_id,
                reservation_id=reservation.pk,
                performance_id=seats[reservation.seat_id].performance_id,
                user_id=reservation.user_id,
                expired_at=now.isoformat(),
            )
        )
    return len(due)


def reservation_lock_for_payment(
    *, user: User, reservation_id: int, now: datetime
) -> Reservation:
    """Lock the user's reservation and check that it can be paid at `now`.

    Call inside the payment's transaction; the lock keeps the hold from expiring or
    being cancelled while the payment runs.
    """
    reservation = _reservation_lock(reservation_id=reservation_id, user=user)
    extra = {"reservation_id": reservation.pk, "status": reservation.status}
    if reservation.paid_at is not None:
        raise AlreadyPaid(extra=extra)
    if reservation.status == ReservationStatus.EXPIRED:
        raise HoldExpired(extra=extra)
    if reservation.status not in HOLDING_STATUSES:
        raise InvalidState(
            f"A {reservation.status} reservation cannot be paid.", extra=extra
        )
    if reservation.hold_expires_at <= now:
        raise HoldExpired(
            extra={**extra, "hold_expires_at": reservation.hold_expires_at.isoformat()}
        )
    return reservation


def reservation_mark_paid(*, reservation: Reservation, paid_at: datetime) -> None:
    """Record the payment on a reservation locked by `reservation_lock_for_payment`.

    The seat becomes SOLD; the reservation keeps its state until `reservation_confirm`.
    """
    seat = Seat.objects.select_for_update().get(pk=reservation.seat_id)
    if seat.status != SeatStatus.HELD:
        raise InvalidState(
            "The seat is no longer held for this reservation.",
            extra={"seat_id": seat.pk, "seat_status": seat.status},
        )
    seat.status = SeatStatus.SOLD
    seat.save(update_fields=["status"])
    reservation.paid_at = paid_at
    reservation.save(update_fields=["paid_at", "updated_at"])


@transaction.atomic
def reservation_complete(*, reservation_id: int) -> Reservation:
    """Move a PENDING reservation to RESERVED (the SeatReserved handler's job).

    Any other state is left alone: RESERVED or CONFIRMED means it already happened,
    EXPIRED or CANCELLED means the hold ended before the event was handled.
    """
    reservation = _reservation_lock(reservation_id=reservation_id)
    if reservation.status == ReservationStatus.PENDING:
        reservation.status = ReservationStatus.RESERVED
        reservation.save(update_fields=["status", "updated_at"])
    return reservation


@transaction.atomic
def reservation_confirm(*, reservation_id: int, now: datetime | None = None) -> Ticket:
    """Confirm a paid reservation and issue its one ticket; return the ticket.

    This is the only way to CONFIRMED. Calling it again returns the same ticket.
    Raises `InvalidState` for an unpaid reservation: the PaymentCompleted event that
    triggers it is only published by a payment that committed.
    """
    now = now or timezone.now()
    reservation = _reservation_lock(reservation_id=reservation_id)
    if reservation.status == ReservationStatus.CONFIRMED:
        ticket, _ = Ticket.objects.get_or_create(
            reservation=reservation,
            defaults={"user_id": reservation.user_id, "code": _ticket_code()},
        )
        return ticket
    if reservation.paid_at is None:
        raise InvalidState(
            "Only a paid reservation can be confirmed.",
            extra={"reservation_id": reservation.pk, "status": reservation.status},
        )
    reservation.status = ReservationStatus.CONFIRMED
    reservation.confirmed_at = now
    reservation.save(update_fields=["status", "confirmed_at", "updated_at"])
    return Ticket.objects.create(
        reservation=reservation, user_id=reservation.user_id, code=_ticket_code()
    )


def _reservation_lock(*, reservation_id: int, user: User | None = None) -> Reservation:
    """Lock a reservation; with `user`, someone else's reservation is NotFound."""
    queryset = Reservation.objects.select_for_update()
    if user is not None:
        queryset = queryset.filter(user=user)
    try:
        return queryset.get(pk=reservation_id)
    except Reservation.DoesNotExist:
        raise NotFound(
            "Reservation not found.", extra={"reservation_id": reservation_id}
        ) from None


def _ticket_code() -> str:
    return secrets.token_hex(10).upper()


def _constraint_name(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)
