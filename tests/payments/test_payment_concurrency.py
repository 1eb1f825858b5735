"""Parallel payments through the API never overspend a wallet nor pay twice."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Sum
from django.urls import reverse
from rest_framework.test import APIClient

from payments.models import Payment, Wallet, WalletTransaction
from payments.services import wallet_charge
from reservations.services import reservation_create
from tests.reservations.concurrency import run_in_parallel
from tests.reservations.factories import make_performance, make_user
from tests.reservations.helpers import outbox

pytestmark = pytest.mark.django_db(transaction=True)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _pay(user, reservation_id: int, key: str | None = None) -> tuple[int, dict]:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = _client(user).post(
        reverse("payments:reservation-pay", args=[reservation_id]), **headers
    )
    return response.status_code, response.json()


def test_parallel_payments_cannot_overspend_the_wallet():
    user = make_user()
    wallet_charge(user=user, amount=250)
    performance = make_performance(seats=10, price=100)
    reservations = [
        reservation_create(user=user, seat_id=seat.pk)
        for seat in performance.seats.all()
    ]

    results = run_in_parallel(lambda r: _pay(user, r.pk), reservations)

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 2, 409: 8}
    codes = {body["error"]["code"] for status, body in results if status == 409}
    assert codes == {"insufficient_balance"}
    wallet = Wallet.objects.get(user=user)
    assert wallet.balance == 50
    ledger_total = WalletTransaction.objects.filter(wallet=wallet).aggregate(
        total=Sum("amount")
    )["total"]
    assert ledger_total == wallet.balance
    assert len(outbox("PaymentCompleted")) == 2


def test_parallel_payments_of_one_reservation_pay_once():
    user = make_user()
    wallet_charge(user=user, amount=1000)
    seat = make_performance(seats=1, price=100).seats.get()
    reservation = reservation_create(user=user, seat_id=seat.pk)

    results = run_in_parallel(
        lambda n: _pay(user, reservation.pk, key=f"k{n}"), range(10)
    )

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 9}
    assert Payment.objects.count() == 1
    assert Wallet.objects.get(user=user).balance == 900
    assert len(outbox("PaymentCompleted")) == 1
