"""Many clients at once through the real API and real PostgreSQL row locks."""

from __future__ import annotations

from collections import Counter

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from http_api.models import IdempotencyRecord
from reservations.models import Reservation, SeatStatus
from tests.reservations.concurrency import run_in_parallel
from tests.reservations.factories import make_performance, make_user
from tests.reservations.helpers import outbox

pytestmark = pytest.mark.django_db(transaction=True)

CREATE_URL = reverse("reservations:reservation-create")


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_fifty_parallel_requests_for_one_seat_give_one_201_and_49_409():
    seat = make_performance(seats=1).seats.get()
    users = [make_user() for _ in range(50)]

    def reserve(user):
        response = _client(user).post(CREATE_URL, {"seat_id": seat.pk}, format="json")
        return response.status_code, response.json()

    results = run_in_parallel(reserve, users)

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 49}
    conflicts = {body["error"]["code"] for status, body in results if status == 409}
    assert conflicts == {"seat_unavailable"}
    assert Reservation.objects.filter(seat=seat).count() == 1
    assert len(outbox("SeatReserved")) == 1
    assert len(outbox("ReservationCreated")) == 1
    seat.refresh_from_db()
    assert seat.status == SeatStatus.HELD


def test_parallel_duplicates_with_one_idempotency_key_take_effect_once():
    seat = make_performance(seats=1).seats.get()
    user = make_user()

    def reserve(_):
        response = _client(user).post(
            CREATE_URL,
            {"seat_id": seat.pk},
            format="json",
            HTTP_IDEMPOTENCY_KEY="double-click",
        )
        return response.status_code, response.json()

    results = run_in_parallel(reserve, range(10))

    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert Reservation.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert len(outbox("SeatReserved")) == 1
