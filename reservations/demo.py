"""Demo data for a fresh machine: one concert, one performance, seats and users.

`demo_seed` is idempotent: every row is found by its natural key before it is
created, and wallets are charged only when they are first created, so running it
twice adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations.models import Concert, Performance, Seat, SeatGrade

CONCERT_TITLE = "Kafka in Concert"
VENUE = "Olympic Hall, Seoul"
SEATS_PER_ROW = 20
# (rows, grade, price in points): 3 VIP rows, 5 R rows, 7 S rows = 300 seats.
SEAT_PLAN = (
    ("ABC", SeatGrade.VIP, 150_000),
    ("DEFGH", SeatGrade.R, 120_000),
    ("IJKLMNO", SeatGrade.S, 90_000),
)
DEMO_USERS = (("alice", 500_000), ("bob", 300_000), ("carol", 100_000))
DEMO_PASSWORD = "password"
ADMIN = ("admin", "admin")


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # Demo username -> API token, for `Authorization: Token <key>`.
    tokens: dict[str, str] = field(default_factory=dict)

    def note(self, created: bool, what: str) -> None:
        (self.created if created else self.existing).append(what)


@transaction.atomic
def demo_seed(*, now: datetime | None = None) -> SeedReport:
    """Create whatever part of the demo data is missing; report what was created."""
    report = SeedReport()
    performance = _seed_performance(report, now or timezone.now())
    _seed_seats(report, performance)
    _seed_users(report)
    _seed_admin(report)
    return report


def _seed_performance(report: SeedReport, now: datetime) -> Performance:
    concert, created = Concert.objects.get_or_create(
        title=CONCERT_TITLE,
        defaults={"artist": "The Brokers", "description": "A demo concert."},
    )
    report.note(created, f"concert {concert.title!r} (id {concert.pk})")
    performance = Performance.objects.filter(concert=concert, venue=VENUE).first()
    created = performance is None
    if performance is None:
        day = (now + timedelta(days=30)).date()
        performance = Performance.objects.create(
            concert=concert,
            venue=VENUE,
            starts_at=datetime.combine(
                day, time(19, 0), tzinfo=timezone.get_current_timezone()
            ),
        )
    report.note(
        created, f"performance at {VENUE} on {performance.starts_at:%Y-%m-%d %H:%M}"
    )
    return performance


def _seed_seats(report: SeedReport, performance: Performance) -> None:
    wanted = [
        Seat(performance=performance, number=f"{row}-{n:02d}", grade=grade, price=price)
        for rows, grade, price in SEAT_PLAN
        for row in rows
        for n in range(1, SEATS_PER_ROW + 1)
    ]
    before = Seat.objects.filter(performance=performance).count()
    Seat.objects.bulk_create(wanted, ignore_conflicts=True)
    added = Seat.objects.filter(performance=performance).count() - before
    report.note(added > 0, f"{added or len(wanted)} seats (VIP/R/S)")


def _seed_users(report: SeedReport) -> None:
    # Demo data spans both apps: the one place reservations reaches into payments.
    from payments.models import Wallet
    from payments.services import wallet_charge

    user_model = get_user_model()
    for username, balance in DEMO_USERS:
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        report.note(created, f"user {username!r} (password {DEMO_PASSWORD!r})")
        token, _ = Token.objects.get_or_create(user=user)
        report.tokens[username] = token.key
        if not Wallet.objects.filter(user=user).exists():
            wallet_charge(user=user, amount=balance)
            report.note(True, f"wallet of {username!r} with {balance} points")
        else:
            report.note(False, f"wallet of {username!r}")


def _seed_admin(report: SeedReport) -> None:
    user_model = get_user_model()
    username, password = ADMIN
    if not user_model.objects.filter(username=username).exists():
        user_model.objects.create_superuser(
            username, f"{username}@example.com", password
        )
        report.note(True, f"superuser {username!r} (password {password!r})")
    else:
        report.note(False, f"superuser {username!r}")
