"""wallet_charge and the database's guard on the balance."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from payments.models import Wallet, WalletTransaction, WalletTransactionKind
from payments.services import MAX_CHARGE_AMOUNT, wallet_charge

pytestmark = pytest.mark.django_db


def test_first_charge_creates_the_wallet_with_a_ledger_line(user):
    wallet = wallet_charge(user=user, amount=500)

    assert wallet.balance == 500
    (line,) = WalletTransaction.objects.filter(wallet=wallet)
    assert (line.kind, line.amount, line.balance_after) == (
        WalletTransactionKind.CHARGE,
        500,
        500,
    )


def test_charges_add_up_and_the_ledger_matches(user):
    wallet_charge(user=user, amount=500)
    wallet = wallet_charge(user=user, amount=250)

    assert wallet.balance == 750
    assert Wallet.objects.get(user=user).balance == 750
    lines = WalletTransaction.objects.filter(wallet=wallet).order_by("id")
    assert [line.balance_after for line in lines] == [500, 750]


@pytest.mark.parametrize("amount", [0, -5, MAX_CHARGE_AMOUNT + 1])
def test_an_out_of_range_charge_is_refused(user, amount):
    with pytest.raises(ValidationError):
        wallet_charge(user=user, amount=amount)

    assert not Wallet.objects.filter(user=user, balance__gt=0).exists()
    assert not WalletTransaction.objects.exists()


def test_the_database_refuses_a_negative_balance(user):
    wallet = wallet_charge(user=user, amount=10)

    with (
        pytest.raises(IntegrityError, match="wallet_balance_non_negative"),
        transaction.atomic(),
    ):
        Wallet.objects.filter(pk=wallet.pk).update(balance=-1)


def test_the_database_refuses_a_ledger_line_with_the_wrong_sign(user):
    wallet = wallet_charge(user=user, amount=10)

    with (
        pytest.raises(IntegrityError, match="wallet_transaction_sign_matches_kind"),
        transaction.atomic(),
    ):
        WalletTransaction.objects.create(
            wallet=wallet,
            kind=WalletTransactionKind.CHARGE,
            amount=-10,
            balance_after=0,
        )
