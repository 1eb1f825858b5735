"""Reservation endpoints: create, list, retrieve, cancel; only your own."""

from __future__ import annotations

import pytest
from django.urls import reverse

from reservations.models import Reservation, ReservationStatus, SeatStatus
from reservations.services import reservation_create
from tests.reservations.helpers import outbox_types

pytestmark = pytest.mark.django_db

CREATE_URL = reverse("reservations:reservation-create")
LIST_URL = reverse("reservations:reservation-list")


def detail_url(reservation_id: int) -> str:
    return reverse("reservations:reservation-detail", args=[reservation_id])


def cancel_url(reservation_id: int) -> str:
    return reverse("reservations:reservation-cancel", args=[reservation_id])


def test_creating_a_reservation_returns_201_with_the_hold(api, user, seat):
    response = api.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["seat"] == {
        "id": seat.pk,
        "number": seat.number,
        "grade": seat.grade,
        "performance_id": seat.performance_id,
    }
    assert body["price"] == seat.price
    assert body["ticket_code"] is None
    assert Reservation.objects.get(pk=body["id"]).user == user
    assert outbox_types() == ["SeatReserved", "ReservationCreated"]


def test_a_taken_seat_is_a_409_conflict(client_for, user, other_user, seat):
    client_for(user).post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    response = client_for(other_user).post(
        CREATE_URL, {"seat_id": seat.pk}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "seat_unavailable",
            "message": "The seat is not available.",
            "details": {"seat_id": seat.pk, "seat_status": "HELD"},
        }
    }


def test_a_missing_seat_id_is_a_400_validation_error(api):
    response = api.post(CREATE_URL, {}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "seat_id" in error["details"]


def test_an_unknown_seat_is_404(api):
    response = api.post(CREATE_URL, {"seat_id": 777_777}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_malformed_json_is_a_400_parse_error(api):
    response = api.post(CREATE_URL, "{nope", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_callers_are_refused(anon_client, seat, method):
    url = LIST_URL if method == "get" else CREATE_URL

    response = getattr(anon_client, method)(url, {"seat_id": seat.pk}, format="json")

    # 403 with session auth first in DEFAULT_AUTHENTICATION_CLASSES, 401 with token.
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "not_authenticated"
    assert not Reservation.objects.exists()


def test_token_authentication_works(anon_client, user, seat):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=user)
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = anon_client.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    assert response.status_code == 201


def test_a_wrong_token_is_refused(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = anon_client.get(LIST_URL)

    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "authentication_failed"


def test_list_shows_only_my_reservations(client_for, user, other_user, performance):
    mine, theirs = performance.seats.order_by("id")[:2]
    reservation_create(user=user, seat_id=mine.pk)
    reservation_create(user=other_user, seat_id=theirs.pk)

    response = client_for(user).get(LIST_URL)

    assert response.status_code == 200
    assert response.data["count"] == 1
    assert response.data["results"][0]["seat"]["id"] == mine.pk


def test_retrieving_my_reservation_works(api, user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    response = api.get(detail_url(reservation.pk))

    assert response.status_code == 200
    assert response.data["id"] == reservation.pk


def test_someone_elses_reservation_is_404(client_for, user, other_user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    response = client_for(other_user).get(detail_url(reservation.pk))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_cancelling_my_reservation_frees_the_seat(api, user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    response = api.post(cancel_url(reservation.pk))

    assert response.status_code == 200
    assert response.data["status"] == "CANCELLED"
    seat.refresh_from_db()
    assert seat.status == SeatStatus.AVAILABLE


def test_cancelling_someone_elses_reservation_is_404(
    client_for, user, other_user, seat
):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    response = client_for(other_user).post(cancel_url(reservation.pk))

    assert response.status_code == 404
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.PENDING


def test_cancelling_a_cancelled_reservation_is_409(api, user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)
    api.post(cancel_url(reservation.pk))

    response = api.post(cancel_url(reservation.pk))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


def test_a_confirmed_reservation_shows_its_ticket(api, user, seat):
    from django.utils import timezone

    from reservations.services import reservation_confirm

    reservation = reservation_create(user=user, seat_id=seat.pk)
    Reservation.objects.filter(pk=reservation.pk).update(paid_at=timezone.now())
    ticket = reservation_confirm(reservation_id=reservation.pk)

    response = api.get(detail_url(reservation.pk))

    assert response.data["status"] == "CONFIRMED"
    assert response.data["ticket_code"] == ticket.code


def test_notifications_list_only_mine(client_for, user, other_user):
    from reservations.notifications import notification_create

    notification_create(user_id=user.pk, kind="hold_expired", message="Mine")
    notification_create(user_id=other_user.pk, kind="hold_expired", message="Theirs")

    response = client_for(user).get(reverse("reservations:notification-list"))

    assert response.status_code == 200
    assert [n["message"] for n in response.data["results"]] == ["Mine"]
