"""`reservation_create` as one PL/pgSQL call, and a paced writer cheap enough for 1,000/s.

Why: on this machine (2 cores) the API under gunicorn commits about 85 reservations/s
and the Python writer (bench.writer, which calls `reservation_create` through the ORM)
about 200/s, so neither can show what relay, Kafka and consumers do at 1,000/s. Here
the business transaction is one statement, `SELECT bench_reserve(seat_id, user_id)`,
sent by a few threads on connections of their own: a round trip and a commit per
reservation, a few tens of µs of Python, and the rest is PostgreSQL doing the same
writes the service does.

`bench_reserve` does, in the caller's (autocommit) transaction, exactly the writes of
reservations.services.reservation_create:
- locks the seat row (`FOR UPDATE OF` the seat, joined to its performance) and refuses
  a missing seat, a started performance or a seat that is not AVAILABLE;
- inserts the PENDING reservation (price from the seat, hold_expires_at = now() + the
  bench's hold, which outlasts any run) in a subtransaction, as the service's nested
  `atomic()` does, turning the one-active-per-seat violation into "seat unavailable";
- sets the seat HELD;
- publishes SeatReserved (seat-reserved stream, keyed by seat) and ReservationCreated
  (reservation stream, keyed by reservation) as events.publish does: the per-key
  advisory lock first, then the outbox row with the same columns, envelope text and
  headers (both events share one trace id, as within one API request).

`install(cdc_slot=...)` writes the cdc-mode variant (OUTBOX_RELAY=cdc): bench_publish
also refuses without the database's replication slot and deletes its row in the same
transaction, as events.publish then does (Debezium reads the insert from the WAL).

It skips the plain read the service makes before taking the lock (a read that spares
a burst for one taken seat the lock queue; every seat here is free). Topic names, the
lock class, the hold and the data fields come from Python (events.core.conf, events.core.outbox,
the event dataclasses) when the functions are created, so the SQL cannot drift from
them silently; bench.pipeline also compares a row of each type with one written by
events.publish before it measures anything. Event ids are UUIDv7 (48-bit millisecond
time, version 7, random rest), not monotonic within a millisecond.

What bounds it is the service's own shape, not Python: the outbox's insert trigger
NOTIFYs, and PostgreSQL commits notifying transactions one at a time (each holds an
exclusive lock on the notification queue, `object` lock on pg_database 0, through its
WAL flush). So writers queue on that lock and the rate is about one commit per flush:
about 1,900/s with nothing else running on this machine, 700-800/s while the relay and
consumers flush too. More threads only lengthen the queue.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from bench.writer import HOLD_SECONDS, Fixture, SeatFeed, WriteResult, _run_threads
from events.core.outbox import PUBLISH_LOCK_CLASS
from events.core.types import Event
from reservations.events import ReservationCreated, SeatReserved

logger = logging.getLogger(__name__)

APPLICATION_NAME = "bench-sql-writer"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
RESERVE_SQL = "SELECT bench_reserve(%s, %s)"

DROP_SQL = """
DROP FUNCTION IF EXISTS bench_reserve(bigint, int);
DROP FUNCTION IF EXISTS bench_publish(text, text, text, int, text, text, text);
DROP FUNCTION IF EXISTS bench_iso(timestamptz);
DROP FUNCTION IF EXISTS bench_uuid7();
"""

HELPERS_SQL = """
CREATE FUNCTION bench_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(
            extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- datetime.isoformat() of an aware UTC datetime, as Django's timezone.now() gives.
CREATE FUNCTION bench_iso(ts timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
$$;
"""

PUBLISH_SQL = """
CREATE FUNCTION bench_publish(
    p_topic text, p_key text, p_type text, p_version int, p_aggregate_type text,
    p_data text, p_trace_id text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_id uuid;
    v_row bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({lock_class}, hashtext(p_topic || '/' || p_key));{slot_check}
    v_id := bench_uuid7();
    INSERT INTO events_outboxevent (
        event_id, event_type, schema_version, topic, key, payload, headers,
        aggregate_type, aggregate_id, created_at, parked_at, last_error)
    VALUES (
        v_id, p_type, p_version, p_topic, p_key,
        format({envelope}, {envelope_args}),
        jsonb_build_object('event_id', v_id::text, 'event_type', p_type,
                           'schema_version', p_version::text, 'trace_id', p_trace_id),
        p_aggregate_type, p_key, clock_timestamp(), NULL, '')
    RETURNING id INTO v_row;{capture}
END
$fn$;
"""

RESERVE_FUNCTION_SQL = """
CREATE FUNCTION bench_reserve(p_seat_id bigint, p_user_id int) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_seat record;
    v_reservation_id bigint;
    v_hold timestamptz := now() + make_interval(secs => {hold_seconds});
    v_trace_id text := replace(gen_random_uuid()::text, '-', '');
BEGIN
    SELECT s.id, s.number, s.price, s.status, s.performance_id, p.starts_at
    INTO v_seat
    FROM reservations_seat s
    JOIN reservations_performance p ON p.id = s.performance_id
    WHERE s.id = p_seat_id
    FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seat % not found', p_seat_id;
    END IF;
    IF v_seat.starts_at <= now() THEN
        RAISE EXCEPTION 'the performance of seat % has started', p_seat_id;
    END IF;
    IF v_seat.status <> 'AVAILABLE' THEN
        RAISE EXCEPTION 'seat % is %', p_seat_id, v_seat.status;
    END IF;
    BEGIN
        INSERT INTO reservations_reservation (
            status, price, hold_expires_at, created_at, updated_at, user_id, seat_id)
        VALUES ('PENDING', v_seat.price, v_hold, now(), now(), p_user_id, p_seat_id)
        RETURNING id INTO v_reservation_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'seat % is unavailable', p_seat_id;
    END;
    UPDATE reservations_seat SET status = 'HELD' WHERE id = p_seat_id;
    PERFORM bench_publish({seat_topic}, v_seat.id::text, {seat_reserved});
    PERFORM bench_publish({reservation_topic}, v_reservation_id::text,
                          {reservation_created});
    RETURN v_reservation_id;
END
$fn$;
"""

# The SQL value of each event field inside bench_reserve, as JSON text.
FIELD_SQL = {
    "seat_id": "to_json(v_seat.id)",
    "reservation_id": "to_json(v_reservation_id)",
    "performance_id": "to_json(v_seat.performance_id)",
    "user_id": "to_json(p_user_id)",
    "seat_number": "to_json(v_seat.number)",
    "price": "to_json(v_seat.price)",
    "status": "to_json('PENDING'::text)",
    "hold_expires_at": "to_json(bench_iso(v_hold))",
}
# The SQL value of each envelope key inside bench_publish, as JSON text.
ENVELOPE_SQL = {
    "id": "to_json(v_id::text)",
    "type": "to_json(p_type)",
    "version": "p_version",
    "occurred_at": "to_json(bench_iso(clock_timestamp()))",
    "aggregate_type": "to_json(p_aggregate_type)",
    "aggregate_id": "to_json(p_key)",
    "data": "p_data",
}


def _literal(value: object) -> str:
    return sql.Literal(value).as_string()


def _json_template(keys: Sequence[str]) -> str:
    """A format() template that writes `keys` as json.dumps does: `{"k": %s, ...}`.

    %s, not %L: every value is already JSON text (to_json), so strings are quoted
    and escaped by PostgreSQL the way JSON wants, not the way SQL does.
    """
    return "{" + ", ".join(f"{json.dumps(k)}: %s" for k in keys) + "}"


def _envelope_keys() -> list[str]:
    """The envelope's keys in the order Event.envelope writes them."""
    sample = SeatReserved(
        seat_id=0, reservation_id=0, performance_id=0, user_id=0, hold_expires_at=""
    )
    return list(
        sample.envelope(event_id=uuid.UUID(int=0), occurred_at=datetime.now(UTC))
    )


def _publish_args(event_class: type[Event]) -> str:
    """bench_publish's arguments after topic and key, for one event class.

    The data template lists the dataclass's fields in their order; a field that
    FIELD_SQL does not know fails here (KeyError), before anything is measured.
    """
    names = [f.name for f in dataclasses.fields(event_class)]  # type: ignore[arg-type]
    data = "format({}, {})".format(
        _literal(_json_template(names)), ", ".join(FIELD_SQL[n] for n in names)
    )
    return ", ".join(
        [
            _literal(event_class.event_type),
            str(int(event_class.version)),
            _literal(event_class.aggregate_type),
            data,
            "v_trace_id",
        ]
    )


# OUTBOX_RELAY=cdc: what events.publish adds (events.core.outbox._lock_and_check_slot
# and _write_captured): refuse without the database's replication slot, and delete the
# row in the same transaction (Debezium reads the insert from the WAL). The size check
# that parks an oversized row is left out: these rows are about 600 bytes.
CDC_SLOT_CHECK_SQL = """
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {slot}) THEN
        RAISE EXCEPTION 'OUTBOX_RELAY=cdc but the replication slot % does not exist',
            {slot};
    END IF;"""
CDC_CAPTURE_SQL = """
    DELETE FROM events_outboxevent WHERE id = v_row;"""


def function_sql(
    *, seat_topic: str, reservation_topic: str, cdc_slot: str | None = None
) -> str:
    """The DDL of bench_reserve and its helpers for one run's topics; with `cdc_slot`,
    bench_publish writes as events.publish does in cdc mode (see CDC_CAPTURE_SQL)."""
    keys = _envelope_keys()
    cdc = cdc_slot is not None
    publish = PUBLISH_SQL.format(
        slot_check=CDC_SLOT_CHECK_SQL.format(slot=_literal(cdc_slot)) if cdc else "",
        capture=CDC_CAPTURE_SQL if cdc else "",
        lock_class=int(PUBLISH_LOCK_CLASS),
        envelope=_literal(_json_template(keys)),
        envelope_args=", ".join(ENVELOPE_SQL[k] for k in keys),
    )
    reserve = RESERVE_FUNCTION_SQL.format(
        hold_seconds=int(HOLD_SECONDS),
        seat_topic=_literal(seat_topic),
        reservation_topic=_literal(reservation_topic),
        seat_reserved=_publish_args(SeatReserved),
        reservation_created=_publish_args(ReservationCreated),
    )
    return DROP_SQL + HELPERS_SQL + publish + reserve


def install(
    *, seat_topic: str, reservation_topic: str, cdc_slot: str | None = None
) -> None:
    """(Re)create bench_reserve and its helpers in the Django default database
    (`cdc_slot`: the cdc-mode variant, which deletes its rows, see function_sql)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            function_sql(
                seat_topic=seat_topic,
                reservation_topic=reservation_topic,
                cdc_slot=cdc_slot,
            )
        )


# -- the writer -----------------------------------------------------------------------


def connect(conninfo: dict[str, Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to a loopback PostgreSQL: one statement, one commit."""
    if conninfo.get("host") not in LOOPBACK:
        raise SystemExit(f"the SQL writer writes to loopback only, not {conninfo!r}")
    return psycopg.connect(
        **conninfo, autocommit=True, application_name=APPLICATION_NAME
    )


def django_conninfo() -> dict[str, Any]:
    """Connection parameters of Django's default database (the step's own)."""
    from django.db import connections

    s = connections["default"].settings_dict
    return {
        "dbname": s["NAME"],
        "user": s["USER"] or None,
        "password": s["PASSWORD"] or None,
        "host": s["HOST"] or "127.0.0.1",
        "port": s["PORT"] or None,
    }


@dataclass
class SqlWriteResult(WriteResult):
    """A WriteResult plus the CPU its writer threads used (thread_time)."""

    thread_cpu_s: float = 0.0


class SqlWriter:
    """Threads that call bench_reserve, one connection each, kept across runs.

    Contract: `paced` and `flat_out` block until their bound (seats or time); each
    call is its own transaction; a call that raises is counted as an error and the
    thread goes on with the next seat. The connections stay open between runs, so
    their PostgreSQL backends (`backend_pids`) can be charged CPU from /proc.
    """

    def __init__(self, threads: int, conninfo: dict[str, Any] | None = None) -> None:
        info = conninfo or django_conninfo()
        self._conns = [connect(info) for _ in range(threads)]

    def backend_pids(self) -> list[int]:
        return [conn.info.backend_pid for conn in self._conns]

    def close(self) -> None:
        for conn in self._conns:
            conn.close()

    def paced(
        self, fixture: Fixture, *, rate: float, seconds: float, threads: int
    ) -> SqlWriteResult:
        """Commit `rate` reservations/s for `seconds` (or until the seats run out).

        Each thread keeps its own schedule (rate/threads per second, staggered) and
        does not catch up in a burst after falling more than a second behind, as
        bench.writer.paced does: a slow spell shows as a lower achieved rate.
        """
        interval = threads / rate

        def pace(n: int, start: float) -> Callable[[], None]:
            next_at = start + interval * n / threads

            def wait() -> None:
                nonlocal next_at
                now = time.perf_counter()
                if next_at < now - 1.0:
                    next_at = now
                elif next_at > now:
                    time.sleep(next_at - now)
                next_at += interval

            return wait

        return self._run(fixture, rate, seconds, threads, pace)

    def flat_out(
        self, fixture: Fixture, *, seconds: float, threads: int
    ) -> SqlWriteResult:
        """Commit the fixture's seats as fast as `threads` callers can, for at most
        `seconds`."""
        return self._run(fixture, None, seconds, threads, lambda _n, _s: lambda: None)

    def _run(
        self,
        fixture: Fixture,
        rate: float | None,
        seconds: float,
        threads: int,
        pace: Callable[[int, float], Callable[[], None]],
    ) -> SqlWriteResult:
        if threads > len(self._conns):
            raise ValueError(f"{threads} threads, {len(self._conns)} connections")
        feed = SeatFeed(fixture)
        start = time.perf_counter()
        end = start + seconds

        def work(n: int, result: WriteResult, lock: threading.Lock) -> None:
            cpu = time.thread_time()
            wait = pace(n, start)
            while True:
                wait()
                if time.perf_counter() >= end or not self._write(n, feed, result, lock):
                    break
            with lock:
                result.thread_cpu_s += time.thread_time() - cpu  # type: ignore[attr-defined]

        result = _run_threads(threads, work, SqlWriteResult(target_rate=rate))
        assert isinstance(result, SqlWriteResult)
        return result

    def _write(
        self, n: int, feed: SeatFeed, result: WriteResult, lock: threading.Lock
    ) -> bool:
        """One bench_reserve on connection `n`; False when the seats ran out."""
        item = feed.next()
        if item is None:
            return False
        user, seat_id = item
        try:
            row = self._conns[n].execute(RESERVE_SQL, (seat_id, user.pk)).fetchone()
        except psycopg.Error:
            logger.exception("bench_reserve(%s, %s) failed", seat_id, user.pk)
            with lock:
                result.errors += 1
            return True
        assert row is not None
        with lock:
            result.committed += 1
            result.reservation_ids.append(int(row[0]))
        return True


def uninstall() -> None:
    """Drop bench_reserve and its helpers (they are the step's, not the schema's)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(DROP_SQL)
