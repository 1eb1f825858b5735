"""The pipeline's own end-to-end latency, fed by SQL: `python -m bench.step pipeline:e2e`.

Why: the API under gunicorn reaches about 85 reservations/s on this machine and the
ORM writer about 200/s, so neither shows relay + Kafka + consumers at 1,000/s. Here
the business transactions come from bench.sql_writer (`bench_reserve`: the writes of
`reservation_create` as one PL/pgSQL call, one commit per reservation), and everything
downstream is the real thing: `manage.py relay_outbox` and `manage.py run_consumers
--concurrency 2` as `make run` starts them, on the step's topics and a consumer group
(and so a dead-letter store group) of the step's own.

Before anything is measured the step writes one reservation with bench_reserve and the
same two events with events.publish in one transaction, compares the rows (columns,
envelope text and keys in order, data, headers, the advisory locks) and rolls back: a
difference fails the step. Then three reservations must go all the way through (the
SeatReserved handler makes them RESERVED, the ReservationCreated handler writes their
notifications) before the phases start.

`pipeline:e2e_cdc` is the same with Debezium as the relay (OUTBOX_RELAY=cdc, set for the
step by bench.__main__): this database's connector registered on the Connect worker at
CDC_CONNECT_URL instead of relay_outbox, bench_reserve deleting its rows in their
transaction as cdc-mode publish does, and the row check comparing the rows both wrote
(copied by a trigger that lives only in the check's transaction) and that both left
the table empty. Only the paced phases: its results go under `cdc_e2e_latency_ms`.

Phases: rate_100 (20 s), rate_1000 (15 s) and saturation (the writer threads flat out,
about 10 s), at BENCH_SCALE. After each, the step waits (bounded) until nothing it
wrote is PENDING and every notification is there, then reads commit -> SeatReserved
handler commit off PostgreSQL's clock (bench.dbclock), the legs split at the relay's
produce (bench.legs: the SeatReserved message's CreateTime), and CPU per reservation
of the writer, relay, consumers, PostgreSQL (per client) and the broker from /proc
(bench.profiling).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from subprocess import Popen
from typing import Any

from django.db import connection, transaction

from bench import dbclock, sql_writer
from bench.cdc_connect import Connector, debezium_backends
from bench.harness import percentiles, seconds
from bench.legs import phase_legs, topic_timestamp_type
from bench.naive_relay import (
    OUR_RELAY_ARGV,
    clear_orphans,
    consumers_argv,
    exit_on_sigterm,
    pipeline_env,
    spawn,
    stop_group,
)
from bench.profiling import CpuSnapshot, broker_pid, cpu_used, process_tree
from bench.sql_writer import SqlWriter, SqlWriteResult
from bench.web_stack import APP_NAMES, postgres_groups
from bench.writer import HOLD_SECONDS, Fixture, make_fixture

# The application_names bench.web_stack charges to the relay and the consumers.
PGAPPNAME = {"relay": "bench-api-relay", "consumers": "bench-api-consumers"}
assert all(APP_NAMES[name] == c for c, name in PGAPPNAME.items())
# Seats set aside for the saturation phase, per second of it: more than the writer
# threads commit on two cores (about 2,000/s with nothing else running).
SATURATION_SEATS_PER_S = 4000
READY_RESERVATIONS = 3
READY_TIMEOUT_S = 90.0
POLL_S = 0.1
NOTIFICATION_KIND = "reservation_created"
UUID7 = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Phase:
    """`rate` reservations/s (None: as fast as `threads` go) for `seconds`."""

    name: str
    rate: int | None
    seconds: float
    threads: int

    @property
    def seats(self) -> int:
        return int((self.rate or SATURATION_SEATS_PER_S) * self.seconds)


def phases() -> list[Phase]:
    """The measured phases at the run's scale. Threads: enough that one call's wait
    (a round trip and a WAL flush, a few ms when the cores are busy) does not hold a
    rate back; at saturation, more callers than cores, so PostgreSQL is never idle."""
    return [
        Phase("rate_100", 100, seconds(20), 2),
        Phase("rate_1000", 1000, seconds(15), 6),
        Phase("saturation", None, seconds(10), 8),
    ]


# -- the row check ---------------------------------------------------------------------

ROWS_SQL = """
SELECT event_id, event_type, schema_version, topic, key, payload, headers::text,
       aggregate_type, aggregate_id, created_at, parked_at, last_error
FROM {table} WHERE xact_id = pg_current_xact_id() ORDER BY id
"""
# In cdc mode both bench_reserve and events.publish delete their rows in the same
# transaction, so the check reads copies: an AFTER INSERT trigger, created inside the
# check's transaction (and rolled back with it), copies every outbox row it inserts.
CAPTURE_SQL = """
CREATE TEMP TABLE bench_captured ON COMMIT DROP AS
    SELECT * FROM events_outboxevent WITH NO DATA;
CREATE FUNCTION bench_capture_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_captured SELECT NEW.*;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_capture AFTER INSERT ON events_outboxevent
    FOR EACH ROW EXECUTE FUNCTION bench_capture_row();
"""
LEFT_SQL = (
    "SELECT count(*) FROM events_outboxevent WHERE xact_id = pg_current_xact_id()"
)
COLUMNS = (
    "event_id", "event_type", "schema_version", "topic", "key", "payload", "headers",
    "aggregate_type", "aggregate_id", "created_at", "parked_at", "last_error",
)  # fmt: skip
ADVISORY_SQL = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  AND classid = %s AND objsubid = 2 AND objid::bigint = (hashtext(%s)::bigint & 4294967295)
"""


def _outbox_rows(table: str = "events_outboxevent") -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(ROWS_SQL.format(table=table))
        return [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def _holds_publish_lock(topic: str, key: str) -> bool:
    from events.core.outbox import PUBLISH_LOCK_CLASS

    with connection.cursor() as cursor:
        cursor.execute(ADVISORY_SQL, [PUBLISH_LOCK_CLASS, f"{topic}/{key}"])
        return cursor.fetchone()[0] == 1


def _published_like_the_service(reservation_id: int) -> None:
    """events.publish the two events reservation_create would publish for it."""
    import events
    from reservations.events import ReservationCreated, SeatReserved
    from reservations.models import Reservation

    r = Reservation.objects.select_related("seat").get(pk=reservation_id)
    hold = r.hold_expires_at.isoformat()
    common = {
        "seat_id": r.seat_id,
        "reservation_id": r.pk,
        "performance_id": r.seat.performance_id,
        "user_id": r.user_id,
        "hold_expires_at": hold,
    }
    events.publish(SeatReserved(**common))
    events.publish(
        ReservationCreated(
            **common, seat_number=r.seat.number, price=r.price, status=r.status
        )
    )


def _envelope_problems(mine: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """What differs between two outbox rows of one event type, ids and times aside."""
    problems = []
    text = mine["payload"]
    if text != json.dumps(json.loads(text)):
        problems.append("payload is not written as json.dumps writes it")
    ours, theirs = json.loads(text), json.loads(real["payload"])
    if list(ours) != list(theirs) or list(ours.get("data", {})) != list(theirs["data"]):
        problems.append(f"envelope keys {list(ours)} vs {list(theirs)}")
    for key in set(ours) - {"id", "occurred_at"}:
        if ours.get(key) != theirs.get(key):
            problems.append(f"{key}: {ours.get(key)!r} vs {theirs.get(key)!r}")
    event_id = str(ours.get("id"))
    if not UUID7.match(event_id) or event_id != str(mine["event_id"]):
        problems.append(f"id {event_id!r} is not the row's UUIDv7")
    return problems + _occurred_problems(ours, mine) + _decode_problems(text)


def _occurred_problems(envelope: dict[str, Any], row: dict[str, Any]) -> list[str]:
    try:
        occurred = datetime.fromisoformat(envelope.get("occurred_at"))
    except (TypeError, ValueError):
        occurred = None
    if (
        occurred is None
        or occurred.utcoffset() != timedelta(0)
        or abs(occurred - row["created_at"]) > timedelta(seconds=5)
    ):
        return [f"occurred_at {envelope.get('occurred_at')!r}"]
    return []


def _decode_problems(text: str) -> list[str]:
    """What the consumers' decoder says about the payload."""
    from events.core.types import PoisonMessage, decode

    try:
        decode(text.encode())
    except PoisonMessage as exc:
        return [f"the consumers' decode() refuses it: {exc}"]
    return []


def _header_problems(mine: dict[str, Any], real: dict[str, Any]) -> list[str]:
    ours, theirs = json.loads(mine["headers"]), json.loads(real["headers"])
    problems = []
    if sorted(ours) != sorted(theirs):
        problems.append(f"header keys {sorted(ours)} vs {sorted(theirs)}")
    for key in ("event_type", "schema_version"):
        if ours.get(key) != theirs.get(key):
            problems.append(f"header {key}: {ours.get(key)!r} vs {theirs.get(key)!r}")
    if ours.get("event_id") != str(mine["event_id"]):
        problems.append("header event_id is not the row's")
    if not TRACE_ID.match(ours.get("trace_id", "")):
        problems.append(f"trace_id {ours.get('trace_id')!r}")
    return problems


def _row_problems(mine: dict[str, Any], real: dict[str, Any]) -> list[str]:
    same = ("event_type", "schema_version", "topic", "key", "aggregate_type")
    problems = [
        f"{c}: {mine[c]!r} vs {real[c]!r}" for c in same + ("aggregate_id",)
        if mine[c] != real[c]
    ]  # fmt: skip
    if (mine["parked_at"], mine["last_error"]) != (None, ""):
        problems.append("row is parked or has an error")
    return problems + _envelope_problems(mine, real) + _header_problems(mine, real)


def check_rows(fixture: Fixture, *, cdc: bool = False) -> dict[str, Any]:
    """Compare bench_reserve's rows with events.publish's for the same reservation;
    raise if they differ. Everything is rolled back: the relay never sees them.

    `cdc`: both write as in OUTBOX_RELAY=cdc (the step runs with it, the slot exists),
    so the rows compared are the trigger's copies (CAPTURE_SQL), and each side must
    also have deleted its rows in its transaction, as Debezium's relay needs.
    """
    from reservations.models import Reservation, Seat

    seat_id, user = fixture.seat_ids[-1], fixture.users[0]
    table = "bench_captured" if cdc else "events_outboxevent"
    left = []
    with transaction.atomic():
        if cdc:
            with connection.cursor() as cursor:
                cursor.execute(CAPTURE_SQL)
        with connection.cursor() as cursor:
            cursor.execute(sql_writer.RESERVE_SQL, [seat_id, user.pk])
            reservation_id = int(cursor.fetchone()[0])
        mine = _outbox_rows(table)
        left.append(_left_in_outbox())
        # Before events.publish takes the same locks: these must be bench_reserve's.
        locks = all(_holds_publish_lock(m["topic"], m["key"]) for m in mine)
        _published_like_the_service(reservation_id)
        real = _outbox_rows(table)[len(mine) :]
        left.append(_left_in_outbox() - left[0])
        reservation = Reservation.objects.select_related("seat").get(pk=reservation_id)
        seat_status = Seat.objects.get(pk=seat_id).status
        transaction.set_rollback(True)
    problems = []
    if cdc and left != [0, 0]:
        problems.append(f"rows left in the outbox (bench_reserve, publish): {left}")
    if not mine:
        problems.append("bench_reserve wrote no outbox rows")
    types = [m["event_type"] for m in mine], [r["event_type"] for r in real]
    if types[0] != types[1]:
        problems.append(f"events {types[0]} vs {types[1]}")
    for m, r in zip(mine, real, strict=False):
        problems += [f"{m['event_type']}: {p}" for p in _row_problems(m, r)]
    problems += _state_problems(reservation, seat_status, locks)
    if problems:
        raise RuntimeError(
            "bench_reserve differs from the service: " + "; ".join(problems)
        )
    return {
        "compared": [m["event_type"] for m in mine],
        "differences": 0,
        "mode": "cdc: rows deleted in their transaction" if cdc else "polling",
    }


def _left_in_outbox() -> int:
    with connection.cursor() as cursor:
        cursor.execute(LEFT_SQL)
        return int(cursor.fetchone()[0])


def _state_problems(reservation: Any, seat_status: str, locks: bool) -> list[str]:
    problems = []
    if not locks:
        problems.append("bench_reserve did not take the publish lock of each row")
    if (reservation.status, seat_status) != ("PENDING", "HELD"):
        problems.append(f"reservation {reservation.status}, seat {seat_status}")
    hold = (reservation.hold_expires_at - reservation.created_at).total_seconds()
    if abs(hold - HOLD_SECONDS) > 1:
        problems.append(f"hold of {hold:.0f} s")
    if reservation.price != reservation.seat.price:
        problems.append("price is not the seat's")
    return problems


# -- the pipeline's processes and what they use ----------------------------------------


@dataclass
class Pipeline:
    """The relay and the consumers as `make run` starts them, and the SQL writer.

    In cdc mode (`connector` set) there is no relay process: Debezium's connector on
    the Connect worker at CDC_CONNECT_URL is the relay, registered before the step's
    writes and deleted (with its slot) after them.
    """

    relay: Popen[Any] | None
    consumers: Popen[Any]
    writer: SqlWriter
    observer: Any
    connector: Connector | None = None

    @classmethod
    def start(
        cls, prefix: str, writer: SqlWriter, observer: Any, *, cdc: bool = False
    ) -> Pipeline:
        """Start both on the step's topics, the consumers in a group of their own
        (KAFKA_CONSUMER_GROUP too: the dead-letter store's group is made from it)."""
        group = f"{prefix}group"
        env = {**pipeline_env(prefix), "KAFKA_CONSUMER_GROUP": group}
        consumers = spawn(
            consumers_argv(group), {**env, "PGAPPNAME": PGAPPNAME["consumers"]}
        )
        if cdc:
            return cls(None, consumers, writer, observer, cdc_connector())
        relay = spawn(OUR_RELAY_ARGV, {**env, "PGAPPNAME": PGAPPNAME["relay"]})
        return cls(relay, consumers, writer, observer)

    def stop(self) -> None:
        if self.relay is not None:
            stop_group(self.relay)
        stop_group(self.consumers)

    def check_alive(self) -> None:
        if self.connector is not None and not self.connector.running():
            raise RuntimeError(f"connector not running: {self.connector.status()}")
        for name, process in (("relay", self.relay), ("consumers", self.consumers)):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode})")

    def relay_pids(self) -> list[int]:
        """The relay's processes: relay_outbox's tree, or the Connect worker's JVM
        (shared with whatever other connectors that worker runs)."""
        if self.relay is not None:
            return process_tree(self.relay.pid)
        assert self.connector is not None
        pid = self.connector.worker_pid()
        return [pid] if pid else []

    def cpu_snapshot(self) -> CpuSnapshot:
        """CPU of the relay's and consumers' process trees, PostgreSQL's backends by
        client (the writer's by pid), the shared background processes and the broker.
        In cdc mode the relay's PostgreSQL share is the walsender and Debezium's JDBC
        connection."""
        broker = broker_pid()
        pg = postgres_groups(self.observer)
        if self.connector is not None:
            mine = [pid for pid, _type, _app in debezium_backends()]
            pg["postgres_relay"] = mine
            pg["postgres_background_shared"] = [
                p for p in pg["postgres_background_shared"] if p not in mine
            ]
        return CpuSnapshot.take(
            {
                "relay": self.relay_pids(),
                "consumers": process_tree(self.consumers.pid),
                "postgres_writer": self.writer.backend_pids(),
                "postgres_relay": pg["postgres_relay"],
                "postgres_consumers": pg["postgres_consumers"],
                "postgres_background_shared": pg["postgres_background_shared"],
                "kafka_broker_shared": [broker] if broker else [],
            }
        )


def cdc_connector() -> Connector:
    """This database's connector on the worker at CDC_CONNECT_URL."""
    from events.core.conf import pipeline_settings

    return Connector(pipeline_settings().cdc_connect_url)


def cpu_summary(
    start: CpuSnapshot, end: CpuSnapshot, written: SqlWriteResult
) -> dict[str, Any]:
    """CPU µs per committed reservation per component, and cores busy, over a phase.

    `writer` is the writer threads' own CPU (thread_time), not the step's other
    threads; `pipeline_total` is relay + consumers + their PostgreSQL backends;
    `postgres` is every client backend of the step (writer, relay, consumers).
    """
    used = cpu_used(start, end)
    used["writer"] = written.thread_cpu_s
    used["postgres"] = sum(
        used[f"postgres_{c}"] for c in ("writer", "relay", "consumers")
    )
    used["pipeline_total"] = sum(
        used[c] for c in ("relay", "consumers", "postgres_relay", "postgres_consumers")
    )
    counted = sum(v for k, v in used.items() if k not in ("postgres", "pipeline_total"))
    per = max(written.committed, 1)
    window = end.at - start.at
    machine = end.machine - start.machine
    return {
        "cpu_us_per_reservation": {k: round(v * 1e6 / per) for k, v in used.items()},
        "cores_busy": {
            **{k: round(v / window, 2) for k, v in used.items()},
            "machine": round(machine / window, 2),
            # Busy outside everything counted here: the step's own main thread and
            # anyone else's work on the same cores (another bench run shows here).
            "others": round(max(0.0, machine - counted) / window, 2),
        },
        "window_s": round(window, 2),
    }


# -- waiting and reading ---------------------------------------------------------------


def last_notification_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM reservations_notification")
        return int(cursor.fetchone()[0])


def notifications_after(after_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM reservations_notification "
            "WHERE id > %s AND kind = %s",
            [after_id, NOTIFICATION_KIND],
        )
        return int(cursor.fetchone()[0])


@dataclass(frozen=True)
class Mark:
    """Where a phase starts: the last reservation and notification before it."""

    reservation: int
    notification: int

    @classmethod
    def now(cls) -> Mark:
        return cls(dbclock.last_reservation_id(), last_notification_id())


def wait_handled(mark: Mark, committed: int, *, timeout: float) -> dict[str, Any]:
    """Wait (bounded) until no reservation after `mark` is PENDING and each has its
    notification; return what is still missing and how long the wait took."""
    started = time.monotonic()
    while True:
        pending = dbclock.pending_reservations(mark.reservation)
        unnotified = committed - notifications_after(mark.notification)
        waited = time.monotonic() - started
        if (pending == 0 and unnotified <= 0) or waited > timeout:
            return {
                "unsettled": pending,
                "unnotified": max(unnotified, 0),
                "settle_wait_s": round(waited, 2),
            }
        time.sleep(POLL_S)


def handled_span(after_id: int) -> tuple[int, float]:
    """Reservations handled after `after_id`, and seconds from the first business
    commit to the last handler commit (bench.api's events_per_s is their ratio)."""
    rows = dbclock.reservation_commit_times(after_id)
    if not rows:
        return 0, 0.0
    first = min(business for _, business, _ in rows)
    last = max(handler for _, _, handler in rows)
    return len(rows), (last - first) / 1000


# -- the phases ------------------------------------------------------------------------


def wait_ready(pipeline: Pipeline, fixture: Fixture) -> float:
    """Seconds until READY_RESERVATIONS went all the way through (group join, relay
    leadership); raise if the consumers did not handle bench_reserve's rows."""
    started = time.monotonic()
    mark = Mark.now()
    seats = fixture.seat_ids[-1 - READY_RESERVATIONS : -1]
    written = pipeline.writer.flat_out(
        Fixture(fixture.performance_id, seats, fixture.users), seconds=30, threads=1
    )
    state = wait_handled(mark, written.committed, timeout=READY_TIMEOUT_S)
    pipeline.check_alive()
    if (
        written.committed != READY_RESERVATIONS
        or state["unsettled"]
        or (state["unnotified"])
    ):
        raise RuntimeError(f"the pipeline did not handle bench_reserve's rows: {state}")
    return round(time.monotonic() - started, 2)


def write(pipeline: Pipeline, seats: Fixture, phase: Phase) -> SqlWriteResult:
    if phase.rate is None:
        return pipeline.writer.flat_out(
            seats, seconds=phase.seconds, threads=phase.threads
        )
    return pipeline.writer.paced(
        seats, rate=phase.rate, seconds=phase.seconds, threads=phase.threads
    )


def run_phase(
    pipeline: Pipeline, seats: Fixture, phase: Phase, topic: str
) -> dict[str, Any]:
    """Write, wait for the pipeline to finish, read latencies, legs and CPU."""
    mark = Mark.now()
    start = pipeline.cpu_snapshot()
    written = write(pipeline, seats, phase)
    state = wait_handled(mark, written.committed, timeout=seconds(30, minimum=10))
    end = pipeline.cpu_snapshot()
    pipeline.check_alive()
    handled, span = handled_span(mark.reservation)
    latency = percentiles(dbclock.reservation_latencies_ms(mark.reservation))
    # Read after the window: the topic's reader is not charged to the pipeline.
    legs = phase_legs(mark.reservation, topic)
    return {
        "e2e_ms": latency,
        "target_rate": phase.rate,
        "achieved_rate": round(written.achieved_rate, 1),
        "writer_threads": phase.threads,
        "seconds": round(phase.seconds, 2),
        "committed": written.committed,
        "write_errors": written.errors,
        "handled": handled,
        "events_per_s": round(handled / span, 1) if span else 0,
        **state,
        **legs,
        **cpu_summary(start, end, written),
    }


def measure(
    pipeline: Pipeline, fixture: Fixture, topic: str, plan: list[Phase]
) -> dict[str, dict[str, Any]]:
    """Each phase on seats of its own, in the fixture's (seeded) order."""
    measured, offset = {}, 0
    for phase in plan:
        part = fixture.seat_ids[offset : offset + phase.seats]
        offset += phase.seats
        seats = Fixture(fixture.performance_id, part, fixture.users)
        measured[phase.name] = run_phase(pipeline, seats, phase, topic)
    return measured


# -- the step --------------------------------------------------------------------------


def e2e() -> dict[str, Any]:
    """Step `pipeline:e2e`: commit -> handler commit at 100/s, 1,000/s and saturation
    with the SQL writer, the real relay and `run_consumers --concurrency 2`."""
    measured, details = run(cdc=False, plan=phases())
    return result(measured, details)


def e2e_cdc() -> dict[str, Any]:
    """Step `pipeline:e2e_cdc`: the same at 100/s and 1,000/s with Debezium as the
    relay (OUTBOX_RELAY=cdc, set for the step by bench.__main__): bench_reserve deletes
    its rows as cdc-mode publish does, the connector is this database's on the worker
    at CDC_CONNECT_URL. No saturation phase: the writer's ceiling, not the relay's, is
    what it would show (the notifying commits serialise, see bench.sql_writer)."""
    from events.core.conf import pipeline_settings

    if not pipeline_settings().cdc:
        raise RuntimeError("pipeline:e2e_cdc needs OUTBOX_RELAY=cdc in its environment")
    plan = [p for p in phases() if p.rate is not None]
    measured, details = run(cdc=True, plan=plan)
    latency = {
        name: {
            **m["e2e_ms"],
            "target_rate": m["target_rate"],
            "achieved_rate": m["achieved_rate"],
        }
        for name, m in measured.items()
    }
    return {
        "cdc_e2e_latency_ms": latency,
        "cdc": {
            "e2e": {
                "legs_ms": {n: m["legs_ms"] for n, m in measured.items()},
                "phases": measured,
                **details,
                "settings": {
                    **settings(),
                    "phases": [dataclasses.asdict(p) for p in plan],
                    "pipeline": (
                        "Debezium (outbox-<db> on the Connect worker at "
                        "CDC_CONNECT_URL); manage.py run_consumers --concurrency 2"
                    ),
                    "legs": (
                        "commit_to_produce ends at the record's CreateTime, which the "
                        "Outbox Event Router sets from Debezium's ts_ms (when Debezium "
                        "read the change), not from the Connect producer's send"
                    ),
                    "cpu": (
                        "as pipeline:e2e; relay = the Connect worker's JVM (shared with "
                        "any other connector it runs), postgres_relay = the walsender "
                        "and Debezium's JDBC connection"
                    ),
                },
            }
        },
    }


def run(
    *, cdc: bool, plan: list[Phase]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Set up, check the rows, start the pipeline, measure `plan`, tear down."""
    import psycopg

    from events.cdc.database import slot_name
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    started = time.monotonic()
    exit_on_sigterm()
    dbclock.require_commit_timestamps()
    conf = pipeline_settings()
    topic = conf.topic("seat-reserved")
    orphans = clear_orphans()
    connector = cdc_connector() if cdc else None
    create_topics()
    registered_s = None
    try:
        if connector is not None:
            # Before the row check: cdc-mode publish refuses without the slot.
            registered_s = connector.register()
        sql_writer.install(
            seat_topic=topic,
            reservation_topic=conf.topic("reservation"),
            cdc_slot=slot_name() if cdc else None,
        )
        seats = sum(p.seats for p in plan) + READY_RESERVATIONS + 1
        fixture = make_fixture("pipeline", seats)
        row_check = check_rows(fixture, cdc=cdc)
        writer = SqlWriter(max(p.threads for p in plan))
        observer = psycopg.connect(**sql_writer.django_conninfo(), autocommit=True)
        pipeline = Pipeline.start(conf.topic_prefix, writer, observer, cdc=cdc)
        try:
            ready_s = wait_ready(pipeline, fixture)
            measured = measure(pipeline, fixture, topic, plan)
        finally:
            pipeline.stop()
            writer.close()
            observer.close()
            sql_writer.uninstall()
    finally:
        if connector is not None:
            connector.delete()
    details = {
        "ready_s": ready_s,
        "row_check": row_check,
        "orphan_outbox_rows_deleted": orphans,
        "seat_reserved_message_timestamp_type": topic_timestamp_type(topic),
        "step_s": round(time.monotonic() - started, 1),
    }
    if registered_s is not None:
        details["connector_register_s"] = registered_s
    return measured, details


def result(
    measured: dict[str, dict[str, Any]], details: dict[str, Any]
) -> dict[str, Any]:
    latency = {
        name: {
            **m["e2e_ms"],
            "target_rate": m["target_rate"],
            "achieved_rate": m["achieved_rate"],
        }
        for name, m in measured.items()
    }
    latency["saturation"]["events_per_s"] = measured["saturation"]["events_per_s"]
    return {
        "pipeline_e2e_latency_ms": latency,
        "pipeline_e2e_legs_ms": {n: m["legs_ms"] for n, m in measured.items()},
        "pipeline": {"phases": measured, **details, "settings": settings()},
    }


def settings() -> dict[str, Any]:
    from events.core.conf import pipeline_settings

    conf = pipeline_settings()
    return {
        "writer": (
            "bench.sql_writer: SELECT bench_reserve(seat, user) per reservation, "
            "autocommit (one transaction each), psycopg, one connection per thread, "
            "loopback; paced per thread (rate/threads each, staggered), or flat out"
        ),
        "phases": [dataclasses.asdict(p) for p in phases()],
        "pipeline": "manage.py relay_outbox; manage.py run_consumers --concurrency 2",
        "partitions": conf.partitions,
        "relay_batch_size": conf.relay_batch_size,
        "relay_poll_interval_s": conf.relay_poll_interval,
        "consumer_batch_size": conf.consumer_batch_size,
        "hold_seconds": HOLD_SECONDS,
        "latency": (
            "commit_ts(seat.xmin: bench_reserve) -> commit_ts(reservation.xmin: "
            "SeatReserved handler), PostgreSQL's clock (bench.dbclock)"
        ),
        "events_per_s": (
            "reservations handled / (last handler commit - first business commit), "
            "as bench.api reports it; each reservation is two events"
        ),
        "cpu": (
            "/proc utime+stime per process over write + settle, per committed "
            "reservation; writer = its threads' thread_time; postgres_* = backends "
            "by client (application_name; the writer's by pid)"
        ),
    }
