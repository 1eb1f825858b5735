"""The report's "before" design, measured so that every figure of ours is a ratio to it.

Before Kafka, the service announced its changes in process: Spring's
`ApplicationEventPublisher` inside the transaction, a `@TransactionalEventListener`
(after commit) marked `@Async`, so each listener ran on a thread pool once the business
transaction had committed. The Django equivalent is `transaction.on_commit(lambda:
pool.submit(...))`. `AfterCommitBus` is that: it takes the place of `events.publish` in
the writing process (services call `events.publish` through the module attribute, so
patching the attribute reroutes them), and runs every handler registered for the event
type (the same functions `run_consumers` runs) on a ThreadPoolExecutor, each in its own
transaction as the async listener's would be. No outbox, no Kafka, no inbox.

Why it is measured the way it is:
- Throughput counts effects, not writes: reservations that reached RESERVED per second,
  from the first business commit to the last handler commit, both read off
  PostgreSQL's commit timestamps. The writers run flat out (several threads) for a
  bounded count; writers and handlers share one interpreter, as they did in the
  monolith, so the handler pool competes with the writers for the GIL and the
  connection pool. That cost is part of the design.
- Latency is commit to handler commit (bench.dbclock), at paced rates, so it is the
  same clock and the same protocol as the pipeline's figures. One process may not
  reach 1,000 writes/s on this machine; the achieved rate is reported next to the
  target.
- The bus's weakness, what a crash loses, is measured by bench.crash, which uses
  this bus in its child process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

import events
from bench import writer
from bench.dbclock import (
    last_reservation_id,
    require_commit_timestamps,
    reservation_latencies_ms,
)
from bench.harness import percentiles, scaled, seconds
from events.core.delivery import Delivery
from events.core.outbox import OutboxError
from events.core.registry import handlers_accepting
from events.core.types import Envelope, Event, new_event_id

logger = logging.getLogger(__name__)

HANDLER_WORKERS = 4
THROUGHPUT_WRITERS = 4

# Business commit -> last handler commit over one run, on PostgreSQL's clock.
SPAN_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE r.status = 'RESERVED'),
       extract(epoch FROM max(pg_xact_commit_timestamp(s.xmin))
                        - min(pg_xact_commit_timestamp(s.xmin))),
       extract(epoch FROM max(pg_xact_commit_timestamp(r.xmin))
                               FILTER (WHERE r.status = 'RESERVED')
                        - min(pg_xact_commit_timestamp(s.xmin)))
FROM reservations_reservation r
JOIN reservations_seat s ON s.id = r.seat_id
WHERE r.id > %s
"""


class AfterCommitBus:
    """In-process events: handlers run on a thread pool after the publishing commit.

    Contract (the "before" design's, weaknesses included):
    - `publish` must run inside `transaction.atomic()`; nothing is written. The event
      is handed to the pool by `transaction.on_commit`, so a rolled-back transaction
      announces nothing.
    - Each handler runs in its own transaction on a pool thread; a failure is logged
      and counted, then forgotten: no retry, no dead letter.
    - Events queued or running when the process dies are lost: nothing records them.
    """

    def __init__(self, workers: int = HANDLER_WORKERS) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="after-commit")
        self._idle = threading.Condition()
        self._outstanding = 0
        self.handled = 0
        self.failures = 0
        self._held: list[Envelope] | None = None
        self._counts = threading.Lock()

    def publish(self, event: Event, *, headers: dict[str, str] | None = None) -> None:
        if not connection.in_atomic_block:
            raise OutboxError("publish() must be called inside transaction.atomic()")
        envelope = Envelope(
            new_event_id(),
            event.event_type,
            event.version,
            timezone.now(),
            event.aggregate_type,
            event.aggregate_id,
            event,
        )
        transaction.on_commit(lambda: self._submit(envelope))

    def hold(self) -> None:
        """Queue what commits from now on instead of running it (see `release`)."""
        self._held = []

    def release(self) -> int:
        """Hand every held event to the pool at once; return how many."""
        held, self._held = self._held or [], None
        for envelope in held:
            self._submit(envelope)
        return len(held)

    def _submit(self, envelope: Envelope) -> None:
        if self._held is not None:
            self._held.append(envelope)
            return
        with self._idle:
            self._outstanding += 1
        self._pool.submit(self._run_handlers, envelope)

    def _run_handlers(self, envelope: Envelope) -> None:
        try:
            for spec in handlers_accepting(envelope.event.stream, envelope.event_type):
                # No Kafka here: the delivery names the stream where a topic would be.
                delivery = Delivery(
                    envelope.event,
                    envelope,
                    envelope.aggregate_id.encode(),
                    envelope.event.stream,
                    0,
                    0,
                    1,
                    None,
                )
                argument: Any = [delivery] if spec.batch else delivery
                try:
                    with transaction.atomic():
                        spec.func(argument)
                except Exception:
                    logger.exception("handler %s failed; the event is gone", spec.name)
                    with self._counts:
                        self.failures += 1
                else:
                    with self._counts:
                        self.handled += 1
        finally:
            # Back to the pool after each event, as a listener borrows a connection
            # from the application's pool per call.
            connection.close()
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted event's handlers have run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[AfterCommitBus]:
        """Route `events.publish` to this bus while the block runs."""
        original = events.publish
        events.publish = self.publish  # type: ignore[assignment]
        try:
            yield self
        finally:
            events.publish = original  # type: ignore[assignment]


def _span(after_id: int) -> tuple[int, int, float, float]:
    with connection.cursor() as cursor:
        cursor.execute(SPAN_SQL, [after_id])
        total, reserved, write_s, effect_s = cursor.fetchone()
    return int(total), int(reserved), float(write_s or 0), float(effect_s or 0)


def throughput(bus: AfterCommitBus, *, count: int, limit_s: float) -> dict[str, Any]:
    """Events/s the thread pool handles, like for like with our consumers' figure.

    Two parts. Writers flat out with the pool running shows what a deployment sees:
    effects follow writes, so the writers bound it (`write_rps`). Then the pool's own
    capacity: reservations committed while the bus holds their events, then all
    handed to the pool at once and timed until it is idle, as our consumer figures
    time a backlog that is already on the topic (`consumer_events_per_s`, events).
    """
    fixture = writer.make_fixture("before-throughput", 2 * count)
    after_id = last_reservation_id()
    handled_before, failures_before = bus.handled, bus.failures
    started = time.perf_counter()
    result = writer.flat_out(
        fixture, count=count, seconds=limit_s, threads=THROUGHPUT_WRITERS
    )
    settled = bus.wait_idle(timeout=120)
    wall = time.perf_counter() - started
    total, reserved, write_s, effect_s = _span(after_id)
    backlog = _backlog(bus, fixture, count=count, limit_s=limit_s)
    return {
        "consumer_events_per_s": backlog["events_per_s"],
        "write_bound_effects_per_s": round(reserved / effect_s, 1)
        if effect_s
        else None,
        "write_rps": round(total / write_s, 1) if write_s else None,
        "throughput": {
            "writers": THROUGHPUT_WRITERS,
            "handler_workers": bus.workers,
            "committed": total,
            "reserved": reserved,
            "write_errors": result.errors,
            "handler_calls": bus.handled - handled_before - backlog["handler_calls"],
            "handler_failures": bus.failures - failures_before,
            "first_commit_to_last_effect_s": round(effect_s, 2),
            "first_to_last_commit_s": round(write_s, 2),
            "wall_s": round(wall, 2),
            "settled": settled,
            "backlog": backlog,
        },
    }


def _backlog(
    bus: AfterCommitBus, fixture: writer.Fixture, *, count: int, limit_s: float
) -> dict[str, Any]:
    """The pool draining `count` reservations' events that were held back at commit."""
    rest = writer.Fixture(
        fixture.performance_id, fixture.seat_ids[count:], fixture.users
    )
    bus.hold()
    try:
        writer.flat_out(rest, count=count, seconds=limit_s, threads=THROUGHPUT_WRITERS)
    finally:
        handled_before = bus.handled
        started = time.perf_counter()
        events = bus.release()
    settled = bus.wait_idle(timeout=120)
    elapsed = time.perf_counter() - started
    calls = bus.handled - handled_before
    return {
        "events": events,
        "handler_calls": calls,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1) if elapsed and settled else None,
        "settled": settled,
    }


def latency(bus: AfterCommitBus, *, rate: int, duration: float) -> dict[str, Any]:
    """Commit → handler commit at a paced `rate` of reservations per second."""
    threads = writer.threads_for(rate)
    fixture = writer.make_fixture(f"before-rate-{rate}", int(rate * duration) + 100)
    after_id = last_reservation_id()
    result = writer.paced(fixture, rate=rate, seconds=duration, threads=threads)
    bus.wait_idle(timeout=120)
    unsettled = writer.wait_settled(after_id, timeout=5)
    return {
        **percentiles(reservation_latencies_ms(after_id)),
        "target_rate": rate,
        "achieved_rate": round(result.achieved_rate, 1),
        "writers": threads,
        "write_errors": result.errors,
        "unsettled": unsettled,
    }


def run() -> dict[str, object]:
    """Step `before_design:run`: throughput and latency of the after-commit thread pool."""
    require_commit_timestamps()
    writer.long_holds()
    bus = AfterCommitBus()
    writers = max(THROUGHPUT_WRITERS, writer.threads_for(1000))
    writer.size_pool(writers + HANDLER_WORKERS + 2)
    try:
        with bus.installed():
            figures = throughput(
                bus, count=scaled(6000, minimum=300), limit_s=seconds(30)
            )
            figures["e2e_latency_ms"] = {
                f"rate_{rate}": latency(bus, rate=rate, duration=seconds(15))
                for rate in (100, 1000)
            }
    finally:
        bus.shutdown()
    return {
        "before_design": {
            "design": (
                "in-process events: transaction.on_commit -> ThreadPoolExecutor("
                f"{bus.workers}) running the registered handlers, each in its own "
                "transaction; no outbox, Kafka or inbox"
            ),
            **figures,
        }
    }
