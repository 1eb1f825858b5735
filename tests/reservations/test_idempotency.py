"""Idempotency-Key: a repeated write returns the stored response and does nothing."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from http_api.idempotency import KEY_PATTERN
from http_api.models import IdempotencyRecord
from reservations.models import Reservation
from tests.reservations.helpers import outbox_types

pytestmark = pytest.mark.django_db

CREATE_URL = reverse("reservations:reservation-create")


def cancel_url(reservation_id: int) -> str:
    return reverse("reservations:reservation-cancel", args=[reservation_id])


def post(client, url, data=None, key="key-1"):
    return client.post(url, data or {}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_repeating_a_create_returns_the_same_response_and_holds_once(api, seat):
    first = post(api, CREATE_URL, {"seat_id": seat.pk})
    second = post(api, CREATE_URL, {"seat_id": seat.pk})

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Reservation.objects.count() == 1
    assert outbox_types() == ["SeatReserved", "ReservationCreated"]


def test_a_stored_conflict_is_replayed_too(client_for, user, other_user, seat):
    client_for(user).post(CREATE_URL, {"seat_id": seat.pk}, format="json")
    theirs = client_for(other_user)

    first = post(theirs, CREATE_URL, {"seat_id": seat.pk})
    second = post(theirs, CREATE_URL, {"seat_id": seat.pk})

    assert first.status_code == second.status_code == 409
    assert second.json() == first.json()


def test_reusing_a_key_with_a_different_body_is_422(api, performance):
    one, two = performance.seats.order_by("id")[:2]
    post(api, CREATE_URL, {"seat_id": one.pk})

    response = post(api, CREATE_URL, {"seat_id": two.pk})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Reservation.objects.count() == 1


def test_reusing_a_key_on_another_reservation_is_422(api, user, performance):
    one, two = performance.seats.order_by("id")[:2]
    first = api.post(CREATE_URL, {"seat_id": one.pk}, format="json").json()
    second = api.post(CREATE_URL, {"seat_id": two.pk}, format="json").json()
    post(api, cancel_url(first["id"]), key="cancel")

    response = post(api, cancel_url(second["id"]), key="cancel")

    assert response.status_code == 422
    assert Reservation.objects.get(pk=second["id"]).status == "PENDING"


def test_the_same_key_from_another_user_is_independent(
    client_for, user, other_user, performance
):
    one, two = performance.seats.order_by("id")[:2]

    mine = post(client_for(user), CREATE_URL, {"seat_id": one.pk}, key="shared")
    theirs = post(client_for(other_user), CREATE_URL, {"seat_id": two.pk}, key="shared")

    assert mine.status_code == theirs.status_code == 201
    assert Reservation.objects.count() == 2


def test_the_same_key_on_another_endpoint_is_independent(api, seat):
    created = post(api, CREATE_URL, {"seat_id": seat.pk}, key="same")

    cancelled = post(api, cancel_url(created.json()["id"]), key="same")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"


def test_a_validation_error_is_not_stored_so_the_key_can_be_retried(api, seat):
    bad = post(api, CREATE_URL, {"seat_id": "abc"}, key="retry-me")
    good = post(api, CREATE_URL, {"seat_id": seat.pk}, key="retry-me")

    assert bad.status_code == 400
    assert good.status_code == 201
    assert IdempotencyRecord.objects.get(key="retry-me").response_status == 201


def test_an_unexpected_error_stores_nothing(api, seat, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("reservations.apis.reservation_create", explode)

    with pytest.raises(RuntimeError):
        post(api, CREATE_URL, {"seat_id": seat.pk}, key="boom")

    assert not IdempotencyRecord.objects.filter(key="boom").exists()


INVALID_KEYS = [
    "",
    "x" * 256,
    "bad\nkey",
    "trailing-newline\n",
    "tab\tkey",
    "del\x7fkey",
    "caf\u00e9",
    "caf\u00c3\u00a9",  # UTF-8 "café" as WSGI hands it over (bytes read as Latin-1)
]
VALID_KEYS = [
    "k",
    "x" * 255,
    "order 42 / attempt ~1",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}",
]


@pytest.fixture(scope="module")
def key_parameter() -> dict:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/reservations/create/"]["post"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return parameter


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_an_invalid_key_is_a_400(api, seat, key):
    response = post(api, CREATE_URL, {"seat_id": seat.pk}, key=key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert response.json()["error"]["details"]["pattern"] == KEY_PATTERN
    assert not Reservation.objects.exists()


@pytest.mark.parametrize("key", VALID_KEYS)
def test_a_valid_key_is_accepted_and_stored(api, seat, key):
    response = post(api, CREATE_URL, {"seat_id": seat.pk}, key=key)

    assert response.status_code == 201
    assert IdempotencyRecord.objects.get().key == key


def test_the_schema_publishes_the_key_rule(key_parameter):
    assert key_parameter["in"] == "header"
    assert key_parameter["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"^[\x20-\x7E]{1,255}$",
    }


@pytest.mark.parametrize("key", INVALID_KEYS + VALID_KEYS)
def test_the_schema_pattern_accepts_exactly_the_keys_the_api_accepts(
    key_parameter, key
):
    """ECMA-262 and Python read this pattern alike; fullmatch as a validator would."""
    schema = key_parameter["schema"]
    by_schema = (
        re.fullmatch(schema["pattern"], key) is not None
        and schema["minLength"] <= len(key) <= schema["maxLength"]
    )

    assert by_schema is (key in VALID_KEYS)


def test_without_a_key_requests_are_not_deduplicated(api, seat):
    first = api.post(CREATE_URL, {"seat_id": seat.pk}, format="json")
    second = api.post(CREATE_URL, {"seat_id": seat.pk}, format="json")

    assert (first.status_code, second.status_code) == (201, 409)
