"""`manage.py seed_demo` creates the demo data once and reports what it did."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from payments.models import Wallet, WalletTransaction
from reservations.models import Concert, Performance, Seat

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_creates_a_concert_a_performance_seats_and_users():
    output = seed()

    assert Concert.objects.count() == 1
    assert Performance.objects.count() == 1
    assert Seat.objects.count() == 300
    assert set(Seat.objects.values_list("grade", flat=True)) == {"VIP", "R", "S"}
    assert authenticate(username="alice", password="password") is not None
    assert authenticate(username="admin", password="admin").is_superuser
    balances = dict(Wallet.objects.values_list("user__username", "balance"))
    assert balances == {"alice": 500_000, "bob": 300_000, "carol": 100_000}
    assert "created   300 seats" in output
    assert "superuser 'admin'" in output


def test_seeding_twice_creates_nothing_twice():
    seed()
    output = seed()

    assert Concert.objects.count() == 1
    assert Performance.objects.count() == 1
    assert Seat.objects.count() == 300
    assert get_user_model().objects.count() == 4
    assert Wallet.objects.get(user__username="alice").balance == 500_000
    assert WalletTransaction.objects.count() == 3
    assert "Nothing to create" in output
