"""Reads of the payments app, always through the owning user."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from http_api.errors import NotFound
from payments.models import Payment, Wallet, WalletTransaction

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def wallet_get(*, user: User) -> Wallet:
    """Return the user's wallet; an unsaved empty one if they never charged."""
    wallet = Wallet.objects.filter(user=user).first()
    return wallet if wallet is not None else Wallet(user=user, balance=0)


def wallet_transaction_list(*, user: User) -> QuerySet[WalletTransaction]:
    return WalletTransaction.objects.filter(wallet__user=user)


def payment_list(*, user: User) -> QuerySet[Payment]:
    return Payment.objects.filter(user=user).select_related("reservation")


def payment_get(*, user: User, payment_id: int) -> Payment:
    try:
        return payment_list(user=user).get(pk=payment_id)
    except Payment.DoesNotExist:
        raise NotFound("Payment not found.", extra={"payment_id": payment_id}) from None
