"""Plain builders of test rows, shared by the reservations and payments tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from reservations.models import Concert, Performance, Seat, SeatGrade

_counter = itertools.count(1)


def make_user(username: str | None = None) -> User:
    name = username or f"user{next(_counter)}"
    return User.objects.create_user(username=name, password="password")


def make_performance(
    *,
    seats: int = 0,
    starts_at: datetime | None = None,
    grade: str = SeatGrade.R,
    price: int = 100,
) -> Performance:
    concert = Concert.objects.create(title=f"Concert {next(_counter)}")
    performance = Performance.objects.create(
        concert=concert,
        venue="Test Hall",
        starts_at=starts_at or timezone.now() + timedelta(days=7),
    )
    for n in range(1, seats + 1):
        make_seat(performance, number=f"A-{n:03d}", grade=grade, price=price)
    return performance


def make_seat(
    performance: Performance,
    *,
    number: str | None = None,
    grade: str = SeatGrade.R,
    price: int = 100,
) -> Seat:
    return Seat.objects.create(
        performance=performance,
        number=number or f"Z-{next(_counter)}",
        grade=grade,
        price=price,
    )
