"""The whole path: API -> outbox -> relay -> Kafka -> consumer -> handler -> database."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from payments.services import wallet_charge
from reservations.models import Notification, Reservation, Ticket
from tests.events.pipeline import running_consumer
from tests.events.relay_process import running_relay
from tests.reservations.factories import make_performance, make_user
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(reservation_id: int) -> str:
    return Reservation.objects.get(pk=reservation_id).status


def test_reserving_and_paying_through_the_api_flows_through_kafka(fresh_topics) -> None:
    performance = make_performance(seats=3, price=100)
    seat = performance.seats.order_by("number").first()
    user = make_user()
    wallet_charge(user=user, amount=500)
    client = APIClient()
    client.force_authenticate(user)

    with running_relay(poll_interval=0.2), running_consumer():
        response = client.post(
            "/api/reservations/create/",
            {"seat_id": seat.pk},
            format="json",
            HTTP_IDEMPOTENCY_KEY="e2e-reserve-1",
        )
        assert response.status_code == 201, response.content
        reservation_id = response.json()["id"]
        assert response.json()["status"] == "PENDING"

        wait_until(lambda: status_of(reservation_id) == "RESERVED", what="RESERVED")
        wait_until(
            lambda: Notification.objects.filter(user=user, kind="reservation_created"),
            what="the reservation notification",
        )

        paid = client.post(f"/api/reservations/{reservation_id}/pay/", format="json")
        assert paid.status_code == 201, paid.content
        wait_until(lambda: status_of(reservation_id) == "CONFIRMED", what="CONFIRMED")
        wait_until(
            lambda: Ticket.objects.filter(reservation_id=reservation_id), what="ticket"
        )
        wait_until(
            lambda: Notification.objects.filter(user=user, kind="ticket_issued"),
            what="the ticket notification",
        )

    assert Ticket.objects.filter(reservation_id=reservation_id).count() == 1
    assert Notification.objects.filter(user=user).count() == 2
    detail = client.get(f"/api/reservations/{reservation_id}/").json()
    assert detail["status"] == "CONFIRMED"


def test_cancelled_and_expired_reservations_notify_their_users(fresh_topics) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from reservations.services import (
        reservation_cancel,
        reservation_create,
        seat_hold_expire_due,
    )

    performance = make_performance(seats=2, price=100)
    first, second = performance.seats.order_by("number")
    user = make_user()
    cancelled = reservation_create(user=user, seat_id=first.pk)
    reservation_cancel(user=user, reservation_id=cancelled.pk)
    expiring = reservation_create(user=user, seat_id=second.pk)
    assert seat_hold_expire_due(now=timezone.now() + timedelta(hours=1)) == 1

    with running_relay(poll_interval=0.2), running_consumer():
        wait_until(
            lambda: (
                {"reservation_cancelled", "hold_expired"}
                <= set(
                    Notification.objects.filter(user=user).values_list(
                        "kind", flat=True
                    )
                )
            ),
            what="both notifications",
        )
    kinds = sorted(
        Notification.objects.filter(user=user).values_list("kind", flat=True)
    )
    assert kinds == [
        "hold_expired",
        "reservation_cancelled",
        "reservation_created",
        "reservation_created",
    ]
    assert Reservation.objects.get(pk=expiring.pk).status == "EXPIRED"
