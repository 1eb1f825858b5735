"""A reservation and its events commit together or not at all."""

from __future__ import annotations

import pytest
from django.db import transaction

from events.models import OutboxEvent
from reservations.models import Reservation, SeatStatus
from reservations.services import reservation_create

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def test_rolled_back_reservation_leaves_no_reservation_and_no_events(user, seat):
    with pytest.raises(Boom), transaction.atomic():
        reservation_create(user=user, seat_id=seat.pk)
        assert OutboxEvent.objects.count() == 2  # written, inside the transaction
        raise Boom

    seat.refresh_from_db()
    assert seat.status == SeatStatus.AVAILABLE
    assert not Reservation.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_failure_while_publishing_undoes_the_hold(monkeypatch, user, seat):
    import events

    real_publish = events.publish

    def publish_then_fail(event, **kwargs):
        if event.event_type == "ReservationCreated":
            raise Boom
        return real_publish(event, **kwargs)

    monkeypatch.setattr(events, "publish", publish_then_fail)

    with pytest.raises(Boom):
        reservation_create(user=user, seat_id=seat.pk)

    seat.refresh_from_db()
    assert seat.status == SeatStatus.AVAILABLE
    assert not Reservation.objects.exists()
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_top_level_transaction_commits_nothing(user, seat):
    """Same as above without the test's wrapping transaction: a real ROLLBACK."""
    with pytest.raises(Boom), transaction.atomic():
        reservation_create(user=user, seat_id=seat.pk)
        raise Boom

    seat.refresh_from_db()
    assert seat.status == SeatStatus.AVAILABLE
    assert not Reservation.objects.exists()
    assert not OutboxEvent.objects.exists()
