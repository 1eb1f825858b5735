"""End to end through the real API under gunicorn: `python -m bench.step api:e2e`.

The stack is the one `make run` starts (bench.web_stack: gunicorn with
config/gunicorn.py, one `relay_outbox`, `run_consumers --concurrency 2`), as
subprocesses of this step, on the step's database and topics. vegeta (bench.load)
sends POST /api/reservations/create/ at a constant rate, each request for a distinct
AVAILABLE seat and a random user of many, to loopback only. Phases: 100/s, 1,000/s,
and saturation (closed loop, a bounded number of requests in flight).

End-to-end latency is read off the database's clock (bench.dbclock): the API's commit
(the seat's HELD) to the SeatReserved handler's commit (the reservation's RESERVED).
No client polls anything, so the measurement does not load what it measures. Each
phase also splits it at the relay's produce of the SeatReserved message (bench.legs:
its Kafka CreateTime, read back from the topic after the phase). Client-side
latencies and status codes come from vegeta's own results.

Where the time goes is read without restarting anything (bench.profiling): CPU per
reservation of every process of the run from /proc (PostgreSQL backends split by the
client they serve, through application_name), pg_stat_activity sampled for what the
backends wait on, and at saturation a `perf` profile of the busy processes and, where
py-spy is installed, Python-level profiles of a gunicorn worker, a consumer and the
relay.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import connection

from bench import dbclock
from bench.harness import percentiles, rng, seconds
from bench.legs import phase_legs, topic_timestamp_type
from bench.load import RESERVE_PATH, Phase, attack, client_figures, write_targets
from bench.profiling import (
    ActivitySampler,
    CpuSnapshot,
    PerfProfile,
    PySpyProfile,
    cpu_used,
    process_cores,
)
from bench.tools import vegeta
from bench.web_stack import (
    APP_NAMES,
    HOLD_SECONDS,
    WRITE_THROTTLE_RATE,
    Stack,
    cpu_groups,
    cpu_summary,
    errors_logged,
    print_log_tails,
    refuse_busy_port,
    start_profiles,
)

USERS = 5000
DRAIN_TIMEOUT_S = 60.0
QUIET_S = 1.0

SPAN_SQL = """
SELECT count(*),
       extract(epoch FROM max(pg_xact_commit_timestamp(r.xmin))
                        - min(pg_xact_commit_timestamp(s.xmin)))
FROM reservations_reservation r
JOIN reservations_seat s ON s.id = r.seat_id
WHERE r.id > %s AND r.status = 'RESERVED'
"""


def phases(web_concurrency: int) -> list[Phase]:
    """The measured phases at the run's scale (BENCH_SCALE), after a warm-up.

    Saturation is closed loop with twice as many requests in flight as gunicorn has
    threads: every thread always has a request waiting, and no more than one, so the
    client p99 is about two requests' service time, not a queue's length over its rate.
    """
    return [
        Phase("warmup", 50, seconds(5), 64),
        Phase("rate_100", 100, seconds(20), 256),
        Phase("rate_1000", 1000, seconds(15), 256),
        Phase("saturation", 0, seconds(15), 2 * web_concurrency),
    ]


# --- data -------------------------------------------------------------------------


def make_data(*, seats: int, users: int) -> tuple[list[int], list[str]]:
    """Create a performance with `seats` AVAILABLE seats and `users` users with tokens.

    Many users, because each request's throttle key and token row are per user, and
    the handler's rows reference the user: a few users would make the bench a queue on
    a few rows. Bulk inserts, so a 60,000-seat hall takes seconds.
    """
    from django.contrib.auth.models import User
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from reservations.models import Concert, Performance, Seat, SeatGrade

    tag = uuid.uuid4().hex[:6]
    concert = Concert.objects.create(title=f"bench api {tag}")
    performance = Performance.objects.create(
        concert=concert,
        venue=f"bench hall {tag}",
        starts_at=timezone.now() + timedelta(days=30),
    )
    Seat.objects.bulk_create(
        [
            Seat(
                performance=performance, number=f"B-{i:06d}", grade=SeatGrade.S, price=1
            )
            for i in range(seats)
        ],
        batch_size=5000,
    )
    names = [f"bench-api-{tag}-{i}" for i in range(users)]
    # Unusable passwords (the tokens are how these users sign in).
    User.objects.bulk_create(
        [User(username=name, password=UNUSABLE_PASSWORD_PREFIX) for name in names],
        batch_size=5000,
    )
    user_ids = User.objects.filter(username__in=names).values_list("pk", flat=True)
    tokens = [Token(key=Token.generate_key(), user_id=pk) for pk in user_ids]
    Token.objects.bulk_create(tokens, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reservations_seat, auth_user, authtoken_token")
    seat_ids = list(
        Seat.objects.filter(performance=performance)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rng("api:seats").shuffle(seat_ids)
    return seat_ids, [t.key for t in tokens]


# --- one phase ----------------------------------------------------------------------


def drain(after_id: int, timeout: float = DRAIN_TIMEOUT_S) -> tuple[int, float]:
    """Wait (bounded) until every reservation after `after_id` was handled.

    Also until no new reservation has appeared for QUIET_S: a request the client gave
    up on (a timeout) may still be queued in gunicorn and commit later, and it must
    not land in the next phase's figures. Return what is still PENDING and how long
    the wait took.
    """
    started = time.monotonic()
    last, quiet_since = dbclock.last_reservation_id(), started
    while True:
        time.sleep(0.2)
        now = time.monotonic()
        newest = dbclock.last_reservation_id()
        if newest != last:
            last, quiet_since = newest, now
        pending = dbclock.pending_reservations(after_id)
        if (pending == 0 and now - quiet_since >= QUIET_S) or now - started > timeout:
            return pending, round(now - started, 2)


def pipeline_span(after_id: int) -> tuple[int, float]:
    """Reservations handled after `after_id`, and seconds from first API commit to last
    handler commit (both off the database's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(SPAN_SQL, [after_id])
        count, span = cursor.fetchone()
    return int(count), float(span or 0.0)


@dataclass
class Run:
    """Everything a phase needs: the stack, a directory, the observers, the data."""

    stack: Stack
    work: Path
    observer: Any
    dsn: str
    topic: str
    seat_ids: list[int]
    tokens: list[str]
    chooser: random.Random = field(default_factory=lambda: rng("api:users"))
    next_seat: int = 0

    def seats(self, n: int) -> list[int]:
        taken = self.seat_ids[self.next_seat : self.next_seat + n]
        self.next_seat += n
        return taken


def run_phase(run: Run, phase: Phase) -> dict[str, Any]:
    """Attack, wait for the pipeline to drain, read latencies and CPU per reservation."""
    targets = run.work / f"{phase.name}.targets.jsonl"
    results = run.work / f"{phase.name}.results.bin"
    write_targets(
        targets,
        seat_ids=run.seats(phase.requests),
        tokens=run.tokens,
        chooser=run.chooser,
    )
    after_id = dbclock.last_reservation_id()
    sampler = ActivitySampler(run.dsn, APP_NAMES)
    profiles = _profiles(run, phase)
    start = CpuSnapshot.take(cpu_groups(run.stack, run.observer))
    sampler.start()
    vegeta_s = attack(phase, targets, results)
    activity = sampler.stop()
    pending, waited = drain(after_id)
    end = CpuSnapshot.take(cpu_groups(run.stack, run.observer))
    run.stack.check_alive()
    handled, span = pipeline_span(after_id)
    e2e = percentiles(dbclock.reservation_latencies_ms(after_id))
    # Read after the window: the topic's reader is not charged to the pipeline.
    legs = phase_legs(after_id, run.topic)
    window = end.at - start.at
    result: dict[str, Any] = {
        "target_rate": phase.rate or "closed loop",
        "max_in_flight": phase.workers,
        "seconds": round(phase.seconds, 2),
        "targets": phase.requests,
        **client_figures(results),
        "handled": handled,
        "pending_after_wait": pending,
        "drain_wait_s": waited,
        "events_per_s": round(handled / span, 1) if span else 0,
        "e2e_ms": e2e,
        **legs,
        "window_s": round(window, 2),
        **cpu_summary(
            cpu_used(start, end),
            vegeta_s=vegeta_s,
            window_s=window,
            machine_s=end.machine - start.machine,
            reservations=handled,
        ),
        "gunicorn_process_cores": process_cores(start, end, "gunicorn"),
        "pg_activity_mean_backends": activity,
    }
    for name, profile in profiles.items():
        result[name] = profile.summary()
    return result


def _profiles(run: Run, phase: Phase) -> dict[str, PerfProfile | PySpyProfile]:
    """Profiles over the middle of the saturation attack (BENCH_API_PERF=0: none)."""
    if phase.rate or os.environ.get("BENCH_API_PERF", "1") == "0":
        return {}
    return start_profiles(
        run.stack,
        run.observer,
        delay=phase.seconds / 3,
        duration=max(1.0, min(5.0, phase.seconds / 3)),
        out=run.work,
    )


# --- the step -----------------------------------------------------------------------


def e2e() -> dict[str, Any]:
    """Commit → handler-committed latency at 100/s, 1,000/s and saturation, and its two
    legs (commit → produce, produce → handler commit); API reserve throughput and p99
    at saturation; where the CPU goes (see the module docstring)."""
    import psycopg

    from bench.setup import delete_topics
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    dbclock.require_commit_timestamps()
    refuse_busy_port()
    vegeta()
    create_topics()
    topic = pipeline_settings().topic("seat-reserved")
    timestamp_type = topic_timestamp_type(topic)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    dsn = os.environ["DATABASE_URL"]
    stack = Stack(logs=work)
    try:
        stack.start()
        web_concurrency = stack.web_concurrency()
        plan = phases(web_concurrency)
        seat_ids, tokens = make_data(seats=sum(p.requests for p in plan), users=USERS)
        with psycopg.connect(dsn, autocommit=True) as observer:
            run = Run(stack, work, observer, dsn, topic, seat_ids, tokens)
            measured = {p.name: run_phase(run, p) for p in plan}
        stack.stop()
    except BaseException:
        stack.kill()
        print_log_tails(work)
        raise
    finally:
        delete_topics(os.environ["KAFKA_TOPIC_PREFIX"])
    result = _result(measured, plan, work, web_concurrency, timestamp_type)
    if os.environ.get("BENCH_API_KEEP") != "1":
        _remove_bulky(work)
    return result


def _result(
    measured: dict[str, dict[str, Any]],
    plan: list[Phase],
    work: Path,
    web_concurrency: int,
    timestamp_type: str,
) -> dict[str, Any]:
    saturation = measured["saturation"]
    e2e_ms: dict[str, Any] = {
        name: measured[name]["e2e_ms"] for name in ("rate_100", "rate_1000")
    }
    e2e_ms["saturation"] = {
        **saturation["e2e_ms"],
        "events_per_s": saturation["events_per_s"],
    }
    return {
        "e2e_latency_ms": e2e_ms,
        "e2e_legs_ms": {
            name: measured[name]["legs_ms"]
            for name in ("rate_100", "rate_1000", "saturation")
        },
        "api_reserve_rps": saturation["created_per_s"],
        "api_reserve_p99_ms": saturation["client_latency_ms"]["p99"],
        "api": {
            "phases": measured,
            "bounds": _bounds(saturation),
            "server_errors_logged": errors_logged(work),
            "logs": str(work),
            "settings": _settings(plan, web_concurrency, timestamp_type),
        },
    }


def _bounds(saturation: dict[str, Any]) -> dict[str, Any]:
    """The saturation figures the report cites for what bounds throughput."""
    return {
        "cpu_us_per_reservation": saturation["cpu_us_per_reservation"],
        "postgres_us_per_reservation_by_client": saturation[
            "postgres_us_per_reservation_by_client"
        ],
        "cores_busy": saturation["cores_busy"],
        "gunicorn_process_cores": saturation["gunicorn_process_cores"],
        "pg_activity_mean_backends": saturation["pg_activity_mean_backends"],
        **{
            k: v for k, v in saturation.items() if k == "perf" or k.startswith("py_spy")
        },
    }


def _settings(
    plan: list[Phase], web_concurrency: int, timestamp_type: str
) -> dict[str, Any]:
    return {
        "endpoint": f"POST {RESERVE_PATH} (no Idempotency-Key), loopback only",
        "load_generator": "vegeta v12.13.0, constant rate (saturation: closed loop)",
        "phases": {p.name: [p.rate or "max", p.seconds, p.workers] for p in plan},
        "phase_columns": ["rate/s", "seconds", "max in flight"],
        "gunicorn": "config/gunicorn.py defaults (2 workers/core, at most 8; "
        f"{os.environ.get('GUNICORN_THREADS', '4')} threads; pool one per thread), "
        "--no-control-socket",
        "gunicorn_threads_total": web_concurrency,
        "relay": "manage.py relay_outbox (defaults, one process, no metrics port)",
        "consumers": "manage.py run_consumers --concurrency 2 (no metrics port, "
        "a consumer group of the run's own)",
        "settings_module": f"{os.environ.get('DJANGO_SETTINGS_MODULE')} (prod "
        "redirects plain HTTP to HTTPS)",
        "API_WRITE_THROTTLE_RATE": f"{WRITE_THROTTLE_RATE} (the default 120/min per "
        "user would refuse; the throttle still runs)",
        "RESERVATION_HOLD_SECONDS": HOLD_SECONDS,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL"),
        "EVENTS_AUDIT_LOG_LEVEL": os.environ.get("EVENTS_AUDIT_LOG_LEVEL"),
        "users": USERS,
        "not_running": "Celery worker and beat (nothing else touches the rows)",
        "e2e_clock": "pg_xact_commit_timestamp(reservation.xmin) - "
        "pg_xact_commit_timestamp(seat.xmin)",
        "e2e_legs_clock": "commit_to_produce: the SeatReserved message's Kafka "
        "timestamp (CreateTime, set by librdkafka in the relay at produce(), whole "
        "ms) - pg_xact_commit_timestamp(seat.xmin); produce_to_handler_commit: "
        "pg_xact_commit_timestamp(reservation.xmin) - that timestamp. The relay and "
        "PostgreSQL run on this machine: both are read off the same clock. Joined by "
        "the payload's reservation_id with the phase's reservations (bench.legs)",
        "seat_reserved_message_timestamp_type": timestamp_type,
        "cpu": "/proc utime+stime per process over attack + drain, per handled "
        "reservation; PostgreSQL backends by application_name; *_shared also serve "
        "other users of this machine; system_total leaves out vegeta and *_shared",
    }


def _remove_bulky(work: Path) -> None:
    """Keep the logs of a run that worked; its targets, results and profile go."""
    for pattern in ("*.targets.jsonl", "*.results.bin", "perf.data*", "py-spy-*"):
        for path in work.glob(pattern):
            path.unlink()
