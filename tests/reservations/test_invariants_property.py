"""Random sequences of reserve / pay / cancel / expire / handle keep every invariant.

A hypothesis state machine drives the real services against PostgreSQL. Before each
action it predicts from the database whether the action must succeed, and checks the
service agrees; after each step it checks the invariants the system promises:
seat state matches its one active reservation, wallets never go negative and always
equal their ledger, each reservation is paid at most once, and every change has
exactly its events in the outbox. Each example runs in a savepoint that is rolled
back, so examples do not see each other.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from events.models import OutboxEvent
from http_api.errors import ApplicationError
from payments.models import Payment, Wallet, WalletTransaction
from payments.services import payment_process, wallet_charge
from reservations.models import (
    ACTIVE_STATUSES,
    HOLDING_STATUSES,
    Reservation,
    ReservationStatus,
    Seat,
    SeatStatus,
    Ticket,
)
from reservations.services import (
    reservation_cancel,
    reservation_complete,
    reservation_confirm,
    reservation_create,
    seat_hold_expire_due,
)
from tests.reservations.factories import make_performance, make_user

USERS = 3
SEATS = 4
PRICE = 100
START_BALANCE = 250  # enough for two seats: the third payment must fail


class ReservationLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.users = [make_user() for _ in range(USERS)]
        for user in self.users:
            wallet_charge(user=user, amount=START_BALANCE)
        performance = make_performance(seats=SEATS, price=PRICE)
        self.seats = list(performance.seats.order_by("id"))
        self.clock = timezone.now()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- helpers ------------------------------------------------------------------

    def _reservations(self) -> list[Reservation]:
        return list(Reservation.objects.order_by("id"))

    def _pick(self, index: int) -> Reservation:
        reservations = self._reservations()
        return reservations[index % len(reservations)]

    def _attempt(self, action, expect_success: bool) -> None:
        try:
            action()
        except ApplicationError as exc:
            assert not expect_success, f"refused unexpectedly: {exc!r}"
        else:
            assert expect_success, "succeeded although it must be refused"

    def has_reservations(self) -> bool:
        return Reservation.objects.exists()

    # --- actions ------------------------------------------------------------------

    @rule(user=st.integers(0, USERS - 1), seat=st.integers(0, SEATS - 1))
    def reserve(self, user: int, seat: int) -> None:
        seat_row = self.seats[seat]
        free = not Reservation.objects.filter(
            seat=seat_row, status__in=ACTIVE_STATUSES
        ).exists()
        self._attempt(
            lambda: reservation_create(
                user=self.users[user], seat_id=seat_row.pk, now=self.clock
            ),
            expect_success=free,
        )

    @precondition(has_reservations)
    @rule(user=st.integers(0, USERS - 1), index=st.integers(0, 50))
    def pay(self, user: int, index: int) -> None:
        payer = self.users[user]
        reservation = self._pick(index)
        balance = Wallet.objects.get(user=payer).balance
        payable = (
            reservation.user_id == payer.pk
            and reservation.paid_at is None
            and reservation.status in HOLDING_STATUSES
            and reservation.hold_expires_at > self.clock
            and balance >= reservation.price
        )
        self._attempt(
            lambda: payment_process(
                user=payer, reservation_id=reservation.pk, now=self.clock
            ),
            expect_success=payable,
        )

    @precondition(has_reservations)
    @rule(user=st.integers(0, USERS - 1), index=st.integers(0, 50))
    def cancel(self, user: int, index: int) -> None:
        owner = self.users[user]
        reservation = self._pick(index)
        cancellable = (
            reservation.user_id == owner.pk
            and reservation.paid_at is None
            and reservation.status in HOLDING_STATUSES
        )
        self._attempt(
            lambda: reservation_cancel(user=owner, reservation_id=reservation.pk),
            expect_success=cancellable,
        )

    @rule(seconds=st.integers(0, 400))
    def time_passes_and_holds_expire(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)
        due = Reservation.objects.filter(
            status__in=HOLDING_STATUSES,
            paid_at__isnull=True,
            hold_expires_at__lte=self.clock,
        ).count()
        assert seat_hold_expire_due(now=self.clock) == due

    @precondition(has_reservations)
    @rule(index=st.integers(0, 50))
    def seat_reserved_is_handled(self, index: int) -> None:
        reservation = self._pick(index)
        before = reservation.status
        after = reservation_complete(reservation_id=reservation.pk).status
        if before == ReservationStatus.PENDING:
            assert after == ReservationStatus.RESERVED
        else:
            assert after == before

    @precondition(has_reservations)
    @rule(index=st.integers(0, 50))
    def payment_completed_is_handled(self, index: int) -> None:
        reservation = self._pick(index)
        self._attempt(
            lambda: reservation_confirm(reservation_id=reservation.pk),
            expect_success=reservation.paid_at is not None,
        )

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def seat_state_matches_its_one_active_reservation(self) -> None:
        for seat in Seat.objects.filter(pk__in=[s.pk for s in self.seats]):
            active = list(seat.reservations.filter(status__in=ACTIVE_STATUSES))
            assert len(active) <= 1
            if not active:
                assert seat.status == SeatStatus.AVAILABLE
            elif active[0].paid_at is None:
                assert seat.status == SeatStatus.HELD
            else:
                assert seat.status == SeatStatus.SOLD

    @invariant()
    def wallets_never_go_negative_and_match_their_ledger(self) -> None:
        for wallet in Wallet.objects.filter(user__in=self.users):
            ledger = WalletTransaction.objects.filter(wallet=wallet)
            paid = Payment.objects.filter(user=wallet.user_id).aggregate(
                total=Sum("amount")
            )["total"]
            assert wallet.balance >= 0
            assert wallet.balance == ledger.aggregate(total=Sum("amount"))["total"]
            assert wallet.balance == START_BALANCE - (paid or 0)

    @invariant()
    def a_reservation_is_paid_at_most_once_and_only_while_active(self) -> None:
        paid = Reservation.objects.filter(paid_at__isnull=False)
        assert Payment.objects.count() == paid.count()
        assert not paid.exclude(status__in=ACTIVE_STATUSES).exists()
        assert not paid.annotate(n=Count("payment")).filter(n__gt=1).exists()
        for payment in Payment.objects.select_related("reservation"):
            assert payment.amount == payment.reservation.price
            assert payment.user_id == payment.reservation.user_id

    @invariant()
    def confirmed_means_paid_with_one_ticket(self) -> None:
        confirmed = Reservation.objects.filter(status=ReservationStatus.CONFIRMED)
        assert not confirmed.filter(paid_at__isnull=True).exists()
        assert Ticket.objects.count() == confirmed.count()

    @invariant()
    def every_change_has_exactly_its_events(self) -> None:
        counts = dict(
            OutboxEvent.objects.values_list("event_type").annotate(n=Count("id"))
        )
        reservations = Reservation.objects.aggregate(
            total=Count("id"),
            cancelled=Count("id", filter=Q(status=ReservationStatus.CANCELLED)),
            expired=Count("id", filter=Q(status=ReservationStatus.EXPIRED)),
        )
        assert counts.get("SeatReserved", 0) == reservations["total"]
        assert counts.get("ReservationCreated", 0) == reservations["total"]
        assert counts.get("ReservationCancelled", 0) == reservations["cancelled"]
        assert counts.get("SeatHoldExpired", 0) == reservations["expired"]
        assert counts.get("PaymentCompleted", 0) == Payment.objects.count()


@pytest.mark.django_db
def test_random_reservation_lifecycles_keep_the_invariants():
    run_state_machine_as_test(
        ReservationLifecycle,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            database=None,  # keep no example database in the working tree
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
