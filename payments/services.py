"""Every write of the payments app: charging a wallet and paying a reservation.

Paying locks in the order reservation, wallet, seat (see `reservations.services`);
the wallet row lock serialises one user's concurrent payments, and the balance
check constraint stops an overdraft even if a writer skipped the lock.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

import events
from payments.errors import InsufficientBalance
from payments.events import PaymentCompleted
from payments.models import Payment, Wallet, WalletTransaction, WalletTransactionKind
from reservations.services import reservation_lock_for_payment, reservation_mark_paid

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

MAX_CHARGE_AMOUNT = 10_000_000


@transaction.atomic
def wallet_charge(*, user: User, amount: int) -> Wallet:
    """Add `amount` points to the user's wallet (created on first charge)."""
    if not isinstance(amount, int) or not 0 < amount <= MAX_CHARGE_AMOUNT:
        raise ValidationError(
            {"amount": [f"Must be an integer from 1 to {MAX_CHARGE_AMOUNT}."]}
        )
    Wallet.objects.get_or_create(user=user)
    wallet = Wallet.objects.select_for_update().get(user=user)
    wallet.balance += amount
    wallet.save(update_fields=["balance", "updated_at"])
    WalletTransaction.objects.create(
        wallet=wallet,
        kind=WalletTransactionKind.CHARGE,
        amount=amount,
        balance_after=wallet.balance,
    )
    return wallet


@transaction.atomic
def payment_process(
    *, user: User, reservation_id: int, now: datetime | None = None
) -> Payment:
    """Pay the user's held reservation from the wallet and publish PaymentCompleted.

    In one transaction: check ownership and state, debit the wallet, record the
    payment and its ledger line, mark the seat SOLD. The reservation becomes
    CONFIRMED later, when the PaymentCompleted handler calls `reservation_confirm`.
    """
    now = now or timezone.now()
    reservation = reservation_lock_for_payment(
        user=user, reservation_id=reservation_id, now=now
    )
    wallet = Wallet.objects.select_for_update().filter(user=user).first()
    balance = wallet.balance if wallet is not None else 0
    if wallet is None or balance < reservation.price:
        raise InsufficientBalance(
            extra={"balance": balance, "required": reservation.price}
        )
    payment = Payment.objects.create(
        reservation=reservation, user=user, amount=reservation.price
    )
    wallet.balance -= payment.amount
    wallet.save(update_fields=["balance", "updated_at"])
    WalletTransaction.objects.create(
        wallet=wallet,
        kind=WalletTransactionKind.PAYMENT,
        amount=-payment.amount,
        balance_after=wallet.balance,
        payment=payment,
    )
    reservation_mark_paid(reservation=reservation, paid_at=now)
    events.publish(
        PaymentCompleted(
            payment_id=payment.pk,
            reservation_id=reservation.pk,
            seat_id=reservation.seat_id,
            performance_id=reservation.seat.performance_id,
            user_id=user.pk,
            amount=payment.amount,
            paid_at=now.isoformat(),
        )
    )
    logger.info("reservation %s paid by payment %s", reservation.pk, payment.pk)
    return payment
