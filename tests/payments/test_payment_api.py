"""Pay, payments and wallet endpoints: status codes, error bodies, ownership."""

from __future__ import annotations

import pytest
from django.urls import reverse

from payments.models import Payment, Wallet
from payments.services import payment_process, wallet_charge
from reservations.models import SeatStatus
from reservations.services import reservation_create
from tests.reservations.helpers import outbox_types

pytestmark = pytest.mark.django_db

WALLET_URL = reverse("payments:wallet-detail")
CHARGE_URL = reverse("payments:wallet-charge")


def pay_url(reservation_id: int) -> str:
    return reverse("payments:reservation-pay", args=[reservation_id])


def test_paying_returns_201_with_the_payment(api, reservation):
    response = api.post(pay_url(reservation.pk))

    assert response.status_code == 201
    assert response.data["reservation_id"] == reservation.pk
    assert response.data["amount"] == 100
    reservation.seat.refresh_from_db()
    assert reservation.seat.status == SeatStatus.SOLD
    assert outbox_types()[-1] == "PaymentCompleted"


def test_paying_twice_is_409_already_paid(api, reservation):
    api.post(pay_url(reservation.pk))

    response = api.post(pay_url(reservation.pk))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"
    assert Payment.objects.count() == 1


def test_paying_with_too_few_points_is_409_insufficient_balance(api, user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    response = api.post(pay_url(reservation.pk))

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "insufficient_balance",
        "message": "The wallet balance is too low.",
        "details": {"balance": 0, "required": 100},
    }


def test_paying_someone_elses_reservation_is_404(client_for, other_user, reservation):
    wallet_charge(user=other_user, amount=1000)

    response = client_for(other_user).post(pay_url(reservation.pk))

    assert response.status_code == 404
    assert Wallet.objects.get(user=other_user).balance == 1000


def test_paying_a_cancelled_reservation_is_409_invalid_state(api, reservation):
    api.post(reverse("reservations:reservation-cancel", args=[reservation.pk]))

    response = api.post(pay_url(reservation.pk))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


def test_anonymous_payment_is_refused(anon_client, reservation):
    response = anon_client.post(pay_url(reservation.pk))

    assert response.status_code in (401, 403)
    assert not Payment.objects.exists()


def test_a_repeated_payment_with_one_key_pays_once(api, reservation):
    first = api.post(pay_url(reservation.pk), HTTP_IDEMPOTENCY_KEY="pay-1")
    second = api.post(pay_url(reservation.pk), HTTP_IDEMPOTENCY_KEY="pay-1")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert Payment.objects.count() == 1
    assert Wallet.objects.get(user=reservation.user).balance == 900


def test_payments_list_and_retrieve_show_only_mine(
    client_for, funded_user, other_user, reservation
):
    payment = payment_process(user=funded_user, reservation_id=reservation.pk)
    mine, theirs = client_for(funded_user), client_for(other_user)
    detail = reverse("payments:payment-detail", args=[payment.pk])

    assert mine.get(reverse("payments:payment-list")).data["count"] == 1
    assert theirs.get(reverse("payments:payment-list")).data["count"] == 0
    assert mine.get(detail).status_code == 200
    assert theirs.get(detail).status_code == 404


def test_wallet_shows_zero_before_the_first_charge(api, user):
    response = api.get(WALLET_URL)

    assert response.status_code == 200
    assert response.data["balance"] == 0
    assert not Wallet.objects.filter(user=user).exists()


def test_charging_adds_points_and_shows_in_the_ledger(api):
    response = api.post(CHARGE_URL, {"amount": 300}, format="json")

    assert response.status_code == 200
    assert response.data["balance"] == 300
    assert api.get(WALLET_URL).data["balance"] == 300
    ledger = api.get(reverse("payments:wallet-transaction-list")).data
    assert [(t["kind"], t["amount"]) for t in ledger["results"]] == [("CHARGE", 300)]


@pytest.mark.parametrize("amount", [0, -1, "lots", None])
def test_a_bad_charge_amount_is_400(api, amount):
    response = api.post(CHARGE_URL, {"amount": amount}, format="json")

    assert response.status_code == 400
    assert "amount" in response.json()["error"]["details"]


def test_a_repeated_charge_with_one_key_charges_once(api, user):
    for _ in range(3):
        response = api.post(
            CHARGE_URL, {"amount": 50}, format="json", HTTP_IDEMPOTENCY_KEY="top-up"
        )

    assert response.json()["balance"] == 50
    assert Wallet.objects.get(user=user).balance == 50


def test_a_charge_key_reused_for_another_amount_is_422(api, user):
    api.post(CHARGE_URL, {"amount": 50}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    response = api.post(
        CHARGE_URL, {"amount": 60}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert response.status_code == 422
    assert Wallet.objects.get(user=user).balance == 50


def test_the_wallet_is_the_callers_own(client_for, funded_user, other_user):
    response = client_for(other_user).get(WALLET_URL)

    assert response.data["balance"] == 0
