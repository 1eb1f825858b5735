"""The business write every baseline shares: `reservation_create`, one per transaction.

The baselines compare designs, so each must be fed the same way: the real service (which
publishes SeatReserved and ReservationCreated), on a performance of the step's own with
enough AVAILABLE seats that no write is refused, by users spread over a few thousand
rows (a notification's foreign-key check share-locks its user's row: with few users the
writers queue on those rows and the bench measures that queue).

The load is seeded (seat order from bench.harness.rng) and bounded twice: by the
number of seats and by time. Writers are threads of the calling process, like the
request threads of one application server; `paced` spreads a target rate over them,
`flat_out` lets them go as fast as they can.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, connections
from django.utils import timezone

from bench.harness import rng

logger = logging.getLogger(__name__)

# Longer than any step: no hold may expire (and free its seat) mid-run.
HOLD_SECONDS = 24 * 3600
USER_COUNT = 5000
# A writer thread does one transaction of about ten round trips at a time: enough
# threads that a rate is not held back by one thread's waits, few enough not to add
# GIL contention for nothing.
WRITER_THREADS = {100: 2, 1000: 8}


@dataclass(frozen=True)
class Fixture:
    """A performance of the step's own: its AVAILABLE seats (in a seeded order) and users."""

    performance_id: int
    seat_ids: list[int]
    users: list[User]


@dataclass
class WriteResult:
    """What a writer run committed; `errors` are writes that raised (none expected)."""

    target_rate: float | None
    committed: int = 0
    errors: int = 0
    seconds: float = 0.0
    reservation_ids: list[int] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "target_rate": self.target_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "committed": self.committed,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }


def threads_for(rate: float) -> int:
    """Writer threads for a paced `rate` (reservations/s)."""
    return WRITER_THREADS.get(int(rate), max(2, min(8, int(rate) // 125)))


def long_holds() -> None:
    """Make this process's holds outlast the run (child processes: set the env var)."""
    settings.RESERVATION_HOLD_SECONDS = HOLD_SECONDS


def size_pool(connections_needed: int) -> None:
    """Let this process's connection pool hold one connection per thread that writes.

    The project's default pool (4) is sized for a web worker; writer and handler
    threads beyond it would wait for a connection and measure that wait instead.
    Must run before the pool is used, or it is closed and made anew.
    """
    database = connections["default"]
    pool = database.settings_dict.get("OPTIONS", {}).get("pool")
    if not pool or pool.get("max_size", 0) >= connections_needed:
        return
    pool["max_size"] = connections_needed
    if database.alias in type(database)._connection_pools:
        database.close()
        database.close_pool()


def bench_users(n: int = USER_COUNT) -> list[User]:
    """`n` users, made in bulk the first time (shared by every step on the database)."""
    names = [f"bench-writer-{i}" for i in range(n)]
    User.objects.bulk_create([User(username=u) for u in names], ignore_conflicts=True)
    return list(User.objects.filter(username__in=names).only("id").order_by("id"))


def make_fixture(label: str, seats: int) -> Fixture:
    """A new performance with `seats` AVAILABLE seats, in the order writers take them."""
    from reservations.models import Concert, Performance, Seat, SeatGrade

    concert = Concert.objects.create(title=f"bench {label} {uuid.uuid4().hex[:8]}")
    performance = Performance.objects.create(
        concert=concert,
        venue="Bench Hall",
        starts_at=timezone.now() + timedelta(days=30),
    )
    created = Seat.objects.bulk_create(
        [
            Seat(
                performance=performance,
                number=f"S-{i:07d}",
                grade=SeatGrade.S,
                price=90_000,
            )
            for i in range(seats)
        ],
        batch_size=5000,
    )
    seat_ids = [seat.pk for seat in created]
    rng(f"writer:{label}").shuffle(seat_ids)
    return Fixture(performance.pk, seat_ids, bench_users())


class SeatFeed:
    """Hands each seat to exactly one writer thread, in the fixture's order."""

    def __init__(self, fixture: Fixture) -> None:
        self._users = fixture.users
        self._items: Iterator[tuple[int, int]] = enumerate(fixture.seat_ids)
        self._lock = threading.Lock()

    def next(self) -> tuple[User, int] | None:
        with self._lock:
            item = next(self._items, None)
        if item is None:
            return None
        n, seat_id = item
        return self._users[n % len(self._users)], seat_id


def write_one(user: User, seat_id: int) -> int:
    """One business transaction; returns the committed reservation's id."""
    from reservations.services import reservation_create

    return reservation_create(user=user, seat_id=seat_id).pk


def _run_threads(
    threads: int,
    work: Callable[[int, WriteResult, threading.Lock], None],
    result: WriteResult,
) -> WriteResult:
    lock = threading.Lock()
    workers = [
        threading.Thread(target=work, args=(n, result, lock), name=f"writer-{n}")
        for n in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result.seconds = time.perf_counter() - started
    return result


def _write_and_record(
    feed: SeatFeed, result: WriteResult, lock: threading.Lock
) -> bool:
    """Write the next seat; False when the seats ran out."""
    item = feed.next()
    if item is None:
        return False
    try:
        reservation_id = write_one(*item)
    except Exception:
        logger.exception("a bench write failed")
        with lock:
            result.errors += 1
        return True
    with lock:
        result.committed += 1
        result.reservation_ids.append(reservation_id)
    return True


def paced(
    fixture: Fixture, *, rate: float, seconds: float, threads: int
) -> WriteResult:
    """Commit `rate` reservations/s for `seconds` (or until the seats run out).

    Each thread keeps its own schedule (rate/threads per second) and does not catch
    up in a burst after falling behind more than a second, so a slow spell shows as a
    lower achieved rate rather than as a burst that floods the pipeline.
    """
    feed = SeatFeed(fixture)
    size_pool(threads + 2)

    def work(n: int, result: WriteResult, lock: threading.Lock) -> None:
        interval = threads / rate
        next_at = time.perf_counter() + interval * n / threads
        end = time.perf_counter() + seconds
        try:
            while time.perf_counter() < end:
                if not _write_and_record(feed, result, lock):
                    return
                next_at += interval
                now = time.perf_counter()
                if next_at < now - 1.0:
                    next_at = now
                elif next_at > now:
                    time.sleep(next_at - now)
        finally:
            connection.close()

    return _run_threads(threads, work, WriteResult(target_rate=rate))


def flat_out(
    fixture: Fixture, *, count: int, seconds: float, threads: int
) -> WriteResult:
    """Commit up to `count` reservations as fast as `threads` writers can, for at most
    `seconds`."""
    feed = SeatFeed(
        Fixture(fixture.performance_id, fixture.seat_ids[:count], fixture.users)
    )
    size_pool(threads + 2)

    def work(n: int, result: WriteResult, lock: threading.Lock) -> None:
        end = time.perf_counter() + seconds
        try:
            while time.perf_counter() < end and _write_and_record(feed, result, lock):
                pass
        finally:
            connection.close()

    return _run_threads(threads, work, WriteResult(target_rate=None))


def wait_settled(after_id: int, *, timeout: float, poll: float = 0.2) -> int:
    """Wait until no reservation after `after_id` is PENDING; return how many still are."""
    from bench.dbclock import pending_reservations

    deadline = time.monotonic() + timeout
    while True:
        pending = pending_reservations(after_id)
        if pending == 0 or time.monotonic() >= deadline:
            return pending
        time.sleep(poll)
