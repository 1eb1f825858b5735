"""Writes are throttled per user under the "writes" scope; reads are not."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

CREATE_URL = reverse("reservations:reservation-create")


@pytest.fixture
def two_writes_a_minute(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"writes": "2/min"},
    }


@pytest.mark.usefixtures("two_writes_a_minute")
def test_writes_beyond_the_rate_get_429(api, performance):
    seats = list(performance.seats.order_by("id")[:3])

    statuses = [
        api.post(CREATE_URL, {"seat_id": seat.pk}, format="json").status_code
        for seat in seats
    ]

    assert statuses == [201, 201, 429]


@pytest.mark.usefixtures("two_writes_a_minute")
def test_a_throttled_response_uses_the_error_body(api, performance):
    seat = performance.seats.first()
    for _ in range(2):
        api.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    response = api.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert error["details"]["wait_seconds"] > 0
    assert "Retry-After" in response.headers


@pytest.mark.usefixtures("two_writes_a_minute")
def test_each_user_has_their_own_budget(client_for, user, other_user, performance):
    seats = list(performance.seats.order_by("id")[:3])
    mine = client_for(user)
    for seat in seats[:2]:
        mine.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    response = client_for(other_user).post(
        CREATE_URL, {"seat_id": seats[2].pk}, format="json"
    )

    assert response.status_code == 201


@pytest.mark.usefixtures("two_writes_a_minute")
def test_reads_are_not_throttled(api):
    statuses = {
        api.get(reverse("reservations:reservation-list")).status_code for _ in range(5)
    }

    assert statuses == {200}
