"""Fixtures shared by tests/reservations and tests/payments (both conftests import)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.test import APIClient

from payments.services import wallet_charge
from reservations.models import Performance, Reservation, Seat
from reservations.services import reservation_create
from tests.reservations.factories import make_performance, make_user


@pytest.fixture(autouse=True)
def fresh_throttle_counts() -> None:
    """Throttle counters live in the cache; no test inherits another's requests."""
    cache.clear()


@pytest.fixture
def user(db) -> User:  # noqa: ANN001
    return make_user()


@pytest.fixture
def other_user(db) -> User:  # noqa: ANN001
    return make_user()


@pytest.fixture
def performance(db) -> Performance:  # noqa: ANN001
    return make_performance(seats=5, price=100)


@pytest.fixture
def seat(performance: Performance) -> Seat:
    return performance.seats.order_by("id").first()


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    """Return an API client authenticated as the given user."""

    def build(user: User) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return build


@pytest.fixture
def api(client_for, user: User) -> APIClient:  # noqa: ANN001
    return client_for(user)


@pytest.fixture
def funded_user(user: User) -> User:
    """`user` with 1000 points in the wallet."""
    wallet_charge(user=user, amount=1000)
    return user


@pytest.fixture
def reservation(funded_user: User, seat: Seat) -> Reservation:
    """A PENDING hold of `seat` (price 100) by `funded_user`."""
    return reservation_create(user=funded_user, seat_id=seat.pk)
