"""payment_process: ownership and state checks, wallet debit, seat SOLD, event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from http_api.errors import NotFound
from payments.errors import InsufficientBalance
from payments.models import Payment, Wallet, WalletTransaction, WalletTransactionKind
from payments.services import payment_process, wallet_charge
from reservations.errors import AlreadyPaid, HoldExpired, InvalidState
from reservations.models import ReservationStatus, SeatStatus
from reservations.services import (
    reservation_cancel,
    reservation_complete,
    reservation_confirm,
    reservation_create,
    seat_hold_expire_due,
)
from tests.reservations.helpers import outbox, topic

pytestmark = pytest.mark.django_db


def test_paying_debits_the_wallet_and_sells_the_seat(funded_user, reservation):
    payment = payment_process(user=funded_user, reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert payment.amount == reservation.price == 100
    assert Wallet.objects.get(user=funded_user).balance == 900
    assert reservation.seat.status == SeatStatus.SOLD
    assert reservation.paid_at is not None
    # CONFIRMED only through reservation_confirm (the PaymentCompleted handler).
    assert reservation.status == ReservationStatus.PENDING
    line = WalletTransaction.objects.get(payment=payment)
    assert (line.kind, line.amount, line.balance_after) == (
        WalletTransactionKind.PAYMENT,
        -100,
        900,
    )


def test_paying_publishes_payment_completed_keyed_by_reservation(
    funded_user, reservation
):
    payment = payment_process(user=funded_user, reservation_id=reservation.pk)

    (event,) = outbox("PaymentCompleted")
    assert event.topic == topic("payment-complete")
    assert event.key == str(reservation.pk)
    assert event.payload["data"]["payment_id"] == payment.pk
    assert event.payload["data"]["amount"] == 100
    assert event.payload["data"]["user_id"] == funded_user.pk


def test_a_paid_reservation_is_confirmed_by_the_handler_service(
    funded_user, reservation
):
    payment_process(user=funded_user, reservation_id=reservation.pk)
    reservation_complete(reservation_id=reservation.pk)

    ticket = reservation_confirm(reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.CONFIRMED
    assert ticket.reservation_id == reservation.pk


def test_paying_twice_is_already_paid(funded_user, reservation):
    payment_process(user=funded_user, reservation_id=reservation.pk)

    with pytest.raises(AlreadyPaid):
        payment_process(user=funded_user, reservation_id=reservation.pk)

    assert Payment.objects.count() == 1
    assert Wallet.objects.get(user=funded_user).balance == 900
    assert len(outbox("PaymentCompleted")) == 1


def test_paying_a_confirmed_reservation_is_already_paid(funded_user, reservation):
    payment_process(user=funded_user, reservation_id=reservation.pk)
    reservation_confirm(reservation_id=reservation.pk)

    with pytest.raises(AlreadyPaid):
        payment_process(user=funded_user, reservation_id=reservation.pk)


def test_paying_someone_elses_reservation_is_not_found(other_user, reservation):
    wallet_charge(user=other_user, amount=1000)

    with pytest.raises(NotFound):
        payment_process(user=other_user, reservation_id=reservation.pk)

    assert Wallet.objects.get(user=other_user).balance == 1000
    assert not Payment.objects.exists()


def test_a_short_wallet_is_insufficient_balance_and_changes_nothing(user, seat):
    wallet_charge(user=user, amount=99)
    reservation = reservation_create(user=user, seat_id=seat.pk)

    with pytest.raises(InsufficientBalance) as excinfo:
        payment_process(user=user, reservation_id=reservation.pk)

    assert excinfo.value.extra == {"balance": 99, "required": 100}
    seat.refresh_from_db()
    assert seat.status == SeatStatus.HELD
    assert Wallet.objects.get(user=user).balance == 99
    assert not Payment.objects.exists()
    assert outbox("PaymentCompleted") == []


def test_a_user_without_a_wallet_has_insufficient_balance(user, seat):
    reservation = reservation_create(user=user, seat_id=seat.pk)

    with pytest.raises(InsufficientBalance):
        payment_process(user=user, reservation_id=reservation.pk)


def test_a_hold_past_its_expiry_cannot_be_paid_even_before_the_sweep(
    funded_user, reservation
):
    late = reservation.hold_expires_at + timedelta(seconds=1)

    with pytest.raises(HoldExpired):
        payment_process(user=funded_user, reservation_id=reservation.pk, now=late)

    assert Wallet.objects.get(user=funded_user).balance == 1000


def test_an_expired_reservation_cannot_be_paid(funded_user, reservation):
    seat_hold_expire_due(now=reservation.hold_expires_at)

    with pytest.raises(HoldExpired):
        payment_process(user=funded_user, reservation_id=reservation.pk)


def test_a_cancelled_reservation_cannot_be_paid(funded_user, reservation):
    reservation_cancel(user=funded_user, reservation_id=reservation.pk)

    with pytest.raises(InvalidState):
        payment_process(user=funded_user, reservation_id=reservation.pk)

    assert Wallet.objects.get(user=funded_user).balance == 1000


def test_the_database_allows_one_payment_per_reservation(funded_user, reservation):
    payment_process(user=funded_user, reservation_id=reservation.pk)

    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(reservation=reservation, user=funded_user, amount=100)
