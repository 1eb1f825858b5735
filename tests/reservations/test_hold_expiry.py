"""seat_hold_expire_due: due unpaid holds end exactly once, even with two callers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from reservations.models import Reservation, ReservationStatus, Seat, SeatStatus
from reservations.services import reservation_create, seat_hold_expire_due
from tests.reservations.factories import make_performance, make_user
from tests.reservations.helpers import outbox, topic


@pytest.mark.django_db
def test_a_due_hold_expires_the_reservation_and_frees_the_seat(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    expired = seat_hold_expire_due(now=reservation.hold_expires_at)

    assert expired == 1
    reservation.refresh_from_db()
    seat.refresh_from_db()
    assert reservation.status == ReservationStatus.EXPIRED
    assert reservation.expired_at == reservation.hold_expires_at
    assert seat.status == SeatStatus.AVAILABLE
    (event,) = outbox("SeatHoldExpired")
    assert event.topic == topic("seat-hold-expired")
    assert event.key == str(seat.pk)
    assert event.payload["data"]["reservation_id"] == reservation.pk


@pytest.mark.django_db
def test_a_hold_not_yet_due_is_left_alone(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    expired = seat_hold_expire_due(
        now=reservation.hold_expires_at - timedelta(seconds=1)
    )

    assert expired == 0
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.PENDING
    assert outbox("SeatHoldExpired") == []


@pytest.mark.django_db
def test_a_reserved_hold_expires_too(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    Reservation.objects.filter(pk=reservation.pk).update(
        status=ReservationStatus.RESERVED
    )

    assert seat_hold_expire_due(now=reservation.hold_expires_at) == 1


@pytest.mark.django_db
def test_a_paid_hold_never_expires(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    Reservation.objects.filter(pk=reservation.pk).update(paid_at=timezone.now())
    Seat.objects.filter(pk=seat.pk).update(status=SeatStatus.SOLD)

    expired = seat_hold_expire_due(now=reservation.hold_expires_at + timedelta(days=1))

    assert expired == 0
    seat.refresh_from_db()
    assert seat.status == SeatStatus.SOLD


@pytest.mark.django_db
def test_expiring_twice_expires_once(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    first = seat_hold_expire_due(now=reservation.hold_expires_at)
    second = seat_hold_expire_due(now=reservation.hold_expires_at)

    assert (first, second) == (1, 0)
    assert len(outbox("SeatHoldExpired")) == 1


@pytest.mark.django_db
def test_an_expired_seat_can_be_reserved_again(user, other_user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    seat_hold_expire_due(now=reservation.hold_expires_at)

    again = reservation_create(user=other_user, seat_id=seat.pk)

    assert again.status == ReservationStatus.PENDING


@pytest.mark.django_db
def test_expiry_works_through_more_than_one_batch(monkeypatch, user):
    monkeypatch.setattr("reservations.services.EXPIRE_BATCH_SIZE", 2)
    performance = make_performance(seats=5)
    for seat in performance.seats.all():
        reservation_create(user=user, seat_id=seat.pk)

    expired = seat_hold_expire_due(now=timezone.now() + timedelta(hours=1))

    assert expired == 5
    assert not performance.seats.exclude(status=SeatStatus.AVAILABLE).exists()


@pytest.mark.django_db(transaction=True)
def test_a_hold_locked_by_another_transaction_is_skipped_not_waited_for():
    user = make_user()
    performance = make_performance(seats=2)
    first, second = (
        reservation_create(user=user, seat_id=seat.pk)
        for seat in performance.seats.order_by("id")
    )
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                Reservation.objects.select_for_update().get(pk=first.pk)
                locked.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        expired = seat_hold_expire_due(now=timezone.now() + timedelta(hours=1))
    finally:
        release.set()
        holder.join()

    assert expired == 1
    assert Reservation.objects.get(pk=second.pk).status == ReservationStatus.EXPIRED
    assert Reservation.objects.get(pk=first.pk).status == ReservationStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_concurrent_expiry_runs_expire_each_hold_exactly_once():
    user = make_user()
    performance = make_performance(seats=40)
    for seat in performance.seats.all():
        reservation_create(user=user, seat_id=seat.pk)
    now = timezone.now() + timedelta(hours=1)
    start = threading.Barrier(4)
    results: list[int] = []

    def sweep() -> None:
        try:
            start.wait(timeout=10)
            results.append(seat_hold_expire_due(now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(results) == 40
    assert len(outbox("SeatHoldExpired")) == 40
    expired_ids = {row.payload["data"]["reservation_id"] for row in outbox()}
    assert len(expired_ids) == 40
    assert not performance.seats.exclude(status=SeatStatus.AVAILABLE).exists()
