"""Wallets (points), their ledger, and payments of reservations.

Database constraints carry the money invariants: a balance is never negative, a
reservation has at most one payment, a ledger entry's sign matches its kind.
`payments.services` is the only writer.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from reservations.models import Reservation


class Wallet(models.Model):
    """A user's points balance; every change is a `WalletTransaction` row."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wallet"
    )
    balance = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="wallet_balance_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"Wallet of user {self.user_id}: {self.balance}"


class Payment(models.Model):
    """A reservation paid from the wallet; the one-to-one allows one per reservation."""

    reservation = models.OneToOneField(
        Reservation, on_delete=models.PROTECT, related_name="payment"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments"
    )
    amount = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="payment_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"Payment {self.pk} for reservation {self.reservation_id}"


class WalletTransactionKind(models.TextChoices):
    CHARGE = "CHARGE", "Charge"
    PAYMENT = "PAYMENT", "Payment"


class WalletTransaction(models.Model):
    """One ledger line: signed `amount` and the balance it left behind."""

    wallet = models.ForeignKey(
        Wallet, on_delete=models.CASCADE, related_name="transactions"
    )
    kind = models.CharField(max_length=10, choices=WalletTransactionKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    payment = models.OneToOneField(
        Payment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entry",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind=WalletTransactionKind.CHARGE, amount__gt=0)
                    | Q(
                        kind=WalletTransactionKind.PAYMENT,
                        amount__lt=0,
                        payment__isnull=False,
                    )
                ),
                name="wallet_transaction_sign_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0),
                name="wallet_transaction_balance_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} -> {self.balance_after}"
