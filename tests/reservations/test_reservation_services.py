"""reservation_create / reservation_cancel: seat state, reservation state, events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from http_api.errors import NotFound
from reservations.errors import AlreadyPaid, InvalidState, SeatUnavailable
from reservations.models import ReservationStatus, SeatStatus
from reservations.services import reservation_cancel, reservation_create
from tests.reservations.factories import make_performance, make_seat
from tests.reservations.helpers import outbox, outbox_types, topic

pytestmark = pytest.mark.django_db


def test_reserving_holds_the_seat_and_creates_a_pending_reservation(user, seat):
    before = timezone.now()

    reservation = reservation_create(user=user, seat_id=seat.pk)

    seat.refresh_from_db()
    assert seat.status == SeatStatus.HELD
    assert reservation.status == ReservationStatus.PENDING
    assert reservation.user == user
    assert reservation.price == seat.price
    hold = reservation.hold_expires_at - before
    assert timedelta(seconds=299) < hold <= timedelta(seconds=301)


def test_hold_duration_follows_the_setting(settings, user, seat):
    settings.RESERVATION_HOLD_SECONDS = 30
    before = timezone.now()

    reservation = reservation_create(user=user, seat_id=seat.pk)

    hold = reservation.hold_expires_at - before
    assert timedelta(seconds=29) < hold <= timedelta(seconds=31)


def test_reserving_writes_exactly_seat_reserved_and_reservation_created(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    assert outbox_types() == ["SeatReserved", "ReservationCreated"]
    seat_reserved, created = outbox()
    assert seat_reserved.topic == topic("seat-reserved")
    assert seat_reserved.key == str(seat.pk)
    assert seat_reserved.payload["data"] == {
        "seat_id": seat.pk,
        "reservation_id": reservation.pk,
        "performance_id": seat.performance_id,
        "user_id": user.pk,
        "hold_expires_at": reservation.hold_expires_at.isoformat(),
    }
    assert created.topic == topic("reservation")
    assert created.key == str(reservation.pk)
    assert created.payload["data"]["status"] == "PENDING"
    assert created.payload["data"]["price"] == seat.price


def test_second_reservation_of_same_seat_is_rejected(user, other_user, seat):
    reservation_create(user=user, seat_id=seat.pk)

    with pytest.raises(SeatUnavailable) as excinfo:
        reservation_create(user=other_user, seat_id=seat.pk)

    assert excinfo.value.extra["seat_status"] == SeatStatus.HELD
    assert outbox_types().count("SeatReserved") == 1


def test_reserving_an_unknown_seat_is_not_found(user):
    with pytest.raises(NotFound):
        reservation_create(user=user, seat_id=999_999)


def test_reserving_a_seat_of_a_started_performance_is_rejected(user):
    past = make_performance(starts_at=timezone.now() - timedelta(minutes=1))
    seat = make_seat(past)

    with pytest.raises(InvalidState):
        reservation_create(user=user, seat_id=seat.pk)

    seat.refresh_from_db()
    assert seat.status == SeatStatus.AVAILABLE


def test_cancelling_frees_the_seat_and_publishes_reservation_cancelled(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    cancelled = reservation_cancel(user=user, reservation_id=reservation.pk)

    seat.refresh_from_db()
    assert cancelled.status == ReservationStatus.CANCELLED
    assert cancelled.cancelled_at is not None
    assert seat.status == SeatStatus.AVAILABLE
    (event,) = outbox("ReservationCancelled")
    assert event.topic == topic("reservation")
    assert event.key == str(reservation.pk)


def test_a_cancelled_seat_can_be_reserved_again(user, other_user, seat):
    first = reservation_create(user=user, seat_id=seat.pk)
    reservation_cancel(user=user, reservation_id=first.pk)

    second = reservation_create(user=other_user, seat_id=seat.pk)

    assert second.status == ReservationStatus.PENDING


def test_cancelling_someone_elses_reservation_is_not_found(user, other_user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    with pytest.raises(NotFound):
        reservation_cancel(user=other_user, reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.PENDING


def test_cancelling_twice_is_an_invalid_state(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    reservation_cancel(user=user, reservation_id=reservation.pk)

    with pytest.raises(InvalidState):
        reservation_cancel(user=user, reservation_id=reservation.pk)

    assert len(outbox("ReservationCancelled")) == 1


def test_a_paid_reservation_cannot_be_cancelled(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    reservation.paid_at = timezone.now()
    reservation.save()

    with pytest.raises(AlreadyPaid):
        reservation_cancel(user=user, reservation_id=reservation.pk)
