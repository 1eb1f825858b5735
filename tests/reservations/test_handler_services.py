"""Services the Kafka handlers call: each one is safe to call twice."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from http_api.errors import NotFound
from reservations.errors import InvalidState
from reservations.models import (
    Notification,
    NotificationKind,
    ReservationStatus,
    Ticket,
)
from reservations.notifications import notification_create
from reservations.services import (
    reservation_cancel,
    reservation_complete,
    reservation_confirm,
    reservation_create,
    seat_hold_expire_due,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def reservation(user, seat):
    return reservation_create(user=user, seat_id=seat.pk)


def _mark_paid(reservation):
    reservation.paid_at = timezone.now()
    reservation.save(update_fields=["paid_at"])


def test_complete_moves_pending_to_reserved(reservation):
    completed = reservation_complete(reservation_id=reservation.pk)

    assert completed.status == ReservationStatus.RESERVED
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.RESERVED


def test_completing_twice_leaves_it_reserved(reservation):
    reservation_complete(reservation_id=reservation.pk)
    again = reservation_complete(reservation_id=reservation.pk)

    assert again.status == ReservationStatus.RESERVED


def test_complete_does_not_revive_an_expired_reservation(reservation):
    seat_hold_expire_due(now=reservation.hold_expires_at)

    result = reservation_complete(reservation_id=reservation.pk)

    assert result.status == ReservationStatus.EXPIRED


def test_complete_does_not_revive_a_cancelled_reservation(user, reservation):
    reservation_cancel(user=user, reservation_id=reservation.pk)

    result = reservation_complete(reservation_id=reservation.pk)

    assert result.status == ReservationStatus.CANCELLED


def test_complete_leaves_a_confirmed_reservation_confirmed(reservation):
    _mark_paid(reservation)
    reservation_confirm(reservation_id=reservation.pk)

    result = reservation_complete(reservation_id=reservation.pk)

    assert result.status == ReservationStatus.CONFIRMED


def test_complete_of_an_unknown_reservation_is_not_found():
    with pytest.raises(NotFound):
        reservation_complete(reservation_id=987_654)


def test_confirm_makes_a_paid_reservation_confirmed_and_issues_a_ticket(reservation):
    _mark_paid(reservation)

    ticket = reservation_confirm(reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.CONFIRMED
    assert reservation.confirmed_at is not None
    assert ticket.reservation_id == reservation.pk
    assert ticket.user_id == reservation.user_id
    assert len(ticket.code) == 20


def test_confirming_twice_issues_one_ticket(reservation):
    _mark_paid(reservation)

    first = reservation_confirm(reservation_id=reservation.pk)
    second = reservation_confirm(reservation_id=reservation.pk)

    assert first.pk == second.pk
    assert Ticket.objects.filter(reservation=reservation).count() == 1


def test_confirming_before_complete_still_confirms(reservation):
    """PaymentCompleted may be handled before SeatReserved; order must not matter."""
    _mark_paid(reservation)
    reservation_confirm(reservation_id=reservation.pk)

    reservation_complete(reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.CONFIRMED


def test_an_unpaid_reservation_cannot_be_confirmed(reservation):
    with pytest.raises(InvalidState):
        reservation_confirm(reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.PENDING
    assert not Ticket.objects.exists()


def test_notification_with_an_event_id_is_created_once(user):
    event_id = uuid.uuid4()

    first = notification_create(
        user_id=user.pk,
        kind=NotificationKind.TICKET_ISSUED,
        message="Paid.",
        event_id=event_id,
    )
    second = notification_create(
        user_id=user.pk,
        kind=NotificationKind.TICKET_ISSUED,
        message="Paid.",
        event_id=str(event_id),
    )

    assert first.pk == second.pk
    assert Notification.objects.filter(user=user).count() == 1


def test_one_event_may_notify_different_kinds(user):
    event_id = uuid.uuid4()

    for kind in (NotificationKind.RESERVATION_CREATED, NotificationKind.HOLD_EXPIRED):
        notification_create(user_id=user.pk, kind=kind, message="A", event_id=event_id)

    assert Notification.objects.filter(user=user).count() == 2


def test_notifications_without_event_id_are_not_deduplicated(user):
    notification_create(user_id=user.pk, kind="hold_expired", message="Expired.")
    notification_create(user_id=user.pk, kind="hold_expired", message="Expired.")

    assert Notification.objects.filter(user=user).count() == 2
