"""Public catalog: concerts, performances and the available seats of a performance."""

from __future__ import annotations

import pytest
from django.urls import reverse

from reservations.models import SeatGrade, SeatStatus
from tests.reservations.factories import make_performance, make_seat

pytestmark = pytest.mark.django_db


@pytest.fixture
def hall():
    performance = make_performance()
    for n in range(3):
        make_seat(performance, number=f"V-{n}", grade=SeatGrade.VIP, price=300)
    for n in range(4):
        make_seat(performance, number=f"R-{n}", grade=SeatGrade.R, price=200)
    for n in range(5):
        make_seat(performance, number=f"S-{n}", grade=SeatGrade.S, price=100)
    return performance


def seats_url(performance_id: int) -> str:
    return reverse("reservations:performance-seat-list", args=[performance_id])


def test_concerts_are_listed_without_logging_in(anon_client, hall):
    response = anon_client.get(reverse("reservations:concert-list"))

    assert response.status_code == 200
    assert response.data["count"] == 1
    assert response.data["results"][0]["title"] == hall.concert.title


def test_a_concert_is_retrieved_by_id(anon_client, hall):
    url = reverse("reservations:concert-detail", args=[hall.concert_id])

    response = anon_client.get(url)

    assert response.status_code == 200
    assert response.data["id"] == hall.concert_id


def test_an_unknown_concert_is_404_with_the_error_body(anon_client):
    response = anon_client.get(reverse("reservations:concert-detail", args=[424242]))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_performances_can_be_filtered_by_concert(anon_client, hall):
    make_performance()
    url = reverse("reservations:performance-list")

    everything = anon_client.get(url)
    filtered = anon_client.get(url, {"concert": hall.concert_id})

    assert everything.data["count"] == 2
    assert [p["id"] for p in filtered.data["results"]] == [hall.pk]
    assert filtered.data["results"][0]["venue"] == "Test Hall"


def test_a_bad_concert_filter_is_a_validation_error(anon_client):
    response = anon_client.get(
        reverse("reservations:performance-list"), {"concert": "x"}
    )

    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert "concert" in body["details"]


def test_a_performance_is_retrieved_with_its_concert(anon_client, hall):
    url = reverse("reservations:performance-detail", args=[hall.pk])

    response = anon_client.get(url)

    assert response.status_code == 200
    assert response.data["concert"]["id"] == hall.concert_id


def test_only_available_seats_are_listed(anon_client, hall):
    hall.seats.filter(number="V-0").update(status=SeatStatus.HELD)
    hall.seats.filter(number="V-1").update(status=SeatStatus.SOLD)

    response = anon_client.get(seats_url(hall.pk))

    assert response.status_code == 200
    numbers = {seat["number"] for seat in response.data["results"]}
    assert response.data["count"] == 10
    assert "V-0" not in numbers and "V-1" not in numbers


def test_seats_are_filtered_by_grade(anon_client, hall):
    response = anon_client.get(seats_url(hall.pk), {"grade": "R"})

    assert response.data["count"] == 4
    assert {seat["grade"] for seat in response.data["results"]} == {"R"}


def test_seats_are_filtered_by_price_range(anon_client, hall):
    response = anon_client.get(seats_url(hall.pk), {"min_price": 150, "max_price": 300})

    assert response.data["count"] == 7
    assert all(150 <= seat["price"] <= 300 for seat in response.data["results"])


def test_seat_list_is_paginated(anon_client, hall):
    first = anon_client.get(seats_url(hall.pk), {"page_size": 5})
    third = anon_client.get(seats_url(hall.pk), {"page_size": 5, "page": 3})

    assert first.data["count"] == 12
    assert len(first.data["results"]) == 5
    assert first.data["next"] is not None
    assert len(third.data["results"]) == 2
    assert third.data["next"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"grade": "GOLD"}, "grade"),
        ({"min_price": "-1"}, "min_price"),
        ({"max_price": "cheap"}, "max_price"),
        ({"min_price": 300, "max_price": 100}, "max_price"),
    ],
)
def test_invalid_seat_filters_are_validation_errors(anon_client, hall, params, field):
    response = anon_client.get(seats_url(hall.pk), params)

    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert field in body["details"]


def test_seats_of_an_unknown_performance_are_404(anon_client):
    response = anon_client.get(seats_url(555_555))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_page_past_the_end_is_404_with_the_error_body(anon_client, hall):
    response = anon_client.get(seats_url(hall.pk), {"page": 99})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
