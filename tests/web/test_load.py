"""500 concurrent clients against gunicorn, with the relay, consumers and a Celery
worker running: no 5xx, no connection errors, one winner per seat, one effect per
event, and the background processes keep working through the burst.

It asserts outcomes only. The throughput and latencies it prints (`-s`) are a rough
look; the benchmarks (bench/) are where speed is measured.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from events.models import InboxEntry, OutboxEvent
from payments.models import Payment, Wallet
from reservations.models import (
    Notification,
    Reservation,
    ReservationStatus,
    Seat,
    Ticket,
)
from reservations.services import reservation_create
from reservations.tasks import expire_seat_holds
from tests.celery_worker import running_worker
from tests.events.pipeline import process_log, start_consumer_process
from tests.events.relay_process import start_relay_process
from tests.reservations.factories import make_performance, make_seat
from tests.waiting import wait_until
from tests.web.server import running_gunicorn

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quiet_httpx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="httpx")


CLIENTS = 500
# Clients that also reserve and pay for a seat of their own.
BUYERS = 200
PRICE = 100


@dataclass
class Outcomes:
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    contested_wins: list[int] = field(default_factory=list)


def make_clients(count: int) -> list[tuple[User, str]]:
    users = User.objects.bulk_create(
        [User(username=f"load{n}", password="!") for n in range(count)]
    )
    tokens = Token.objects.bulk_create(
        [Token(user=user, key=Token.generate_key()) for user in users]
    )
    Wallet.objects.bulk_create(
        [Wallet(user=user, balance=10 * PRICE) for user in users]
    )
    return [(token.user, token.key) for token in tokens]


async def one_client(
    http: httpx.AsyncClient,
    *,
    token: str,
    performance_id: int,
    contested_seat: int,
    own_seat: int | None,
    start: asyncio.Event,
    outcomes: Outcomes,
) -> None:
    headers = {"Authorization": f"Token {token}"}

    async def call(method: str, path: str, **kwargs: object) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            response = await http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            outcomes.errors.append(f"{method} {path}: {type(exc).__name__} {exc}")
            return None
        outcomes.latencies.append(time.perf_counter() - began)
        outcomes.statuses[(method, path.split("/")[2], response.status_code)] += 1
        return response

    await start.wait()
    await call("GET", f"/api/performances/{performance_id}/seats/?page_size=20")
    contested = await call(
        "POST", "/api/reservations/create/", json={"seat_id": contested_seat}
    )
    if contested is not None and contested.status_code == 201:
        reservation_id = contested.json()["id"]
        outcomes.contested_wins.append(reservation_id)
        await call("POST", f"/api/reservations/{reservation_id}/pay/")
    if own_seat is not None:
        own = await call(
            "POST", "/api/reservations/create/", json={"seat_id": own_seat}
        )
        if own is not None and own.status_code == 201:
            await call("POST", f"/api/reservations/{own.json()['id']}/pay/")
    await call("GET", "/api/reservations/")


async def burst(url: str, clients: list, **seats: object) -> tuple[Outcomes, float]:
    outcomes = Outcomes()
    start = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        tasks = [
            asyncio.create_task(
                one_client(http, token=token, start=start, outcomes=outcomes, **seat)
            )
            for (_user, token), seat in zip(clients, seats["plan"], strict=True)
        ]
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
    return outcomes, time.perf_counter() - began


def test_500_concurrent_clients_get_no_5xx_and_every_effect_happens_once(
    fresh_topics: object, subprocess_env: dict[str, str]
) -> None:
    performance = make_performance(seats=1, price=PRICE)
    contested = performance.seats.get()
    own_seats = [
        make_seat(performance, number=f"B-{n:03d}", price=PRICE).pk
        for n in range(BUYERS)
    ]
    clients = make_clients(CLIENTS)
    plan = [
        {
            "performance_id": performance.pk,
            "contested_seat": contested.pk,
            "own_seat": own_seats[n] if n < BUYERS else None,
        }
        for n in range(CLIENTS)
    ]
    # A hold that is already due: the Celery worker must expire it during the burst.
    due_seat = make_seat(performance, number="C-001", price=PRICE)
    due = reservation_create(user=clients[0][0], seat_id=due_seat.pk)
    Reservation.objects.filter(pk=due.pk).update(
        hold_expires_at=timezone.now() - timedelta(seconds=1)
    )

    env = dict(subprocess_env, API_WRITE_THROTTLE_RATE="100000/min")
    relay = start_relay_process(env)
    consumers = start_consumer_process(env, "--concurrency", "2")
    try:
        with (
            running_worker("--pool", "solo") as queue,
            running_gunicorn(API_WRITE_THROTTLE_RATE="100000/min") as url,
        ):
            expire_seat_holds.apply_async(queue=queue, countdown=1)
            outcomes, seconds = asyncio.run(burst(url, clients, plan=plan))

            wait_until(
                lambda: (
                    Reservation.objects.get(pk=due.pk).status
                    == ReservationStatus.EXPIRED
                ),
                timeout=60,
                what="the Celery worker to expire the due hold",
            )
            paid = Payment.objects.count()
            wait_until(
                lambda: (
                    Ticket.objects.count() == paid and not OutboxEvent.objects.exists()
                ),
                timeout=120,
                what="the consumers to confirm every paid reservation",
            )
    finally:
        for process in (relay, consumers):
            process.terminate()
            process.wait(timeout=60)

    requests = sum(outcomes.statuses.values())
    latencies = sorted(outcomes.latencies)
    print(
        f"\n{requests} requests from {CLIENTS} clients in {seconds:.1f} s "
        f"({requests / seconds:.0f}/s); p50 {statistics.median(latencies) * 1000:.0f} "
        f"ms, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms"
    )
    assert outcomes.errors == [], outcomes.errors[:5]
    server_errors = {k: v for k, v in outcomes.statuses.items() if k[2] >= 500}
    assert server_errors == {}
    assert set(outcomes.statuses) <= {
        ("GET", "performances", 200),
        ("GET", "reservations", 200),
        ("POST", "reservations", 201),
        ("POST", "reservations", 409),
    }, outcomes.statuses

    # One winner for the contested seat; every buyer got and paid their own seat.
    assert len(outcomes.contested_wins) == 1
    assert Reservation.objects.filter(seat=contested).count() == 1
    assert paid == BUYERS + 1
    assert outcomes.statuses[("POST", "reservations", 409)] == CLIENTS - 1
    assert set(
        Seat.objects.filter(pk__in=own_seats).values_list("status", flat=True)
    ) == {"SOLD"}

    # Every event was handled exactly once by each of its handlers.
    reservations = BUYERS + 2  # the buyers', the contested winner's, the due one
    assert (
        Reservation.objects.filter(status=ReservationStatus.CONFIRMED).count() == paid
    )
    handled = Counter(InboxEntry.objects.values_list("handler", flat=True))
    assert handled == {
        "reservations.handlers.complete_reservation": reservations,
        "reservations.handlers.notify_reservation_created": reservations,
        "payments.handlers.confirm_and_issue_ticket": paid,
        "reservations.handlers.notify_hold_expired": 1,
    }
    kinds = Counter(Notification.objects.values_list("kind", flat=True))
    assert kinds["reservation_created"] == reservations
    assert kinds["ticket_issued"] == paid
    assert Wallet.objects.filter(balance__lt=0).count() == 0
    assert "Traceback" not in process_log(consumers), process_log(consumers)[-3000:]
    assert "Traceback" not in process_log(relay), process_log(relay)[-3000:]
