"""Age the `aged` database the way production would, so figures can be taken at steady state.

A fresh table flatters a benchmark: its indexes fit in memory, its heap has no dead
tuples, and every insert appends. Production's are different in three ways, and this
step reproduces each:

- The outbox is a queue. Every row is inserted, sent and deleted, so what matters is
  churn, not size: writers insert while the real relay (`manage.py relay_outbox`, in
  its own process) drains, through at least CHURN_ROWS rows, under the project's own
  autovacuum settings (nothing here vacuums by hand).
- The inbox keeps what retention keeps: EVENTS_INBOX_RETENTION_DAYS (8) days of a
  stated production flow (FLOW_PER_S events/s), with times spread over those days and
  UUIDv7 ids that follow them, as the consumers write them.
- Notifications are kept (they are the users'): the same flow over the same days,
  over USERS users.

The database is kept between runs: a run finds what a previous one did in
`bench_aging` and only tops up. Set BENCH_AGE_AGAIN=1 to start from an empty database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.db import connection

from bench.harness import ROOT, scaled

FLOW_PER_S = 8.0
CHURN_ROWS = 5_000_000
USERS = 50_000
CHUNK = 250_000
WRITER_ROWS_PER_TRANSACTION = 100
WRITERS = 2

LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS bench_aging (
    what text PRIMARY KEY, rows bigint NOT NULL, seconds double precision NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""


def _ledger() -> dict[str, tuple[int, float]]:
    with connection.cursor() as cursor:
        cursor.execute(LEDGER_SQL)
        cursor.execute("SELECT what, rows, seconds FROM bench_aging")
        return {what: (rows, secs) for what, rows, secs in cursor.fetchall()}


def _record(what: str, rows: int, secs: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_aging (what, rows, seconds) VALUES (%s, %s, %s) "
            "ON CONFLICT (what) DO UPDATE SET rows = bench_aging.rows + EXCLUDED.rows, "
            "seconds = bench_aging.seconds + EXCLUDED.seconds, at = now()",
            [what, rows, secs],
        )


def _count(table: str) -> int:
    # The planner's estimate after ANALYZE: a count(*) over millions of rows per run
    # would cost more than the step it checks.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")  # noqa: S608 - constant names
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [table]
        )
        return int(cursor.fetchone()[0])


def _users(n: int) -> None:
    """The `n` users the notifications belong to (made once, in SQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO auth_user (password, is_superuser, username, first_name,
                last_name, email, is_staff, is_active, date_joined)
            SELECT '!', false, 'aged-user-' || i, '', '', '', false, true, now()
            FROM generate_series(1, %s) AS i
            ON CONFLICT (username) DO NOTHING
            """,
            [n],
        )


# UUIDv7 from a time: 48 bits of milliseconds, version 7, then pseudo-random bits.
UUID7_SQL = """(lpad(to_hex((extract(epoch FROM {ts}) * 1000)::bigint), 12, '0')
    || '7' || substr(md5(({i})::text), 1, 3) || '8' || substr(md5(({i})::text), 4, 15))::uuid"""

INBOX_FILL_SQL = f"""
INSERT INTO events_inboxentry (event_id, handler, topic, partition, "offset", attempt,
    processed_at)
SELECT {UUID7_SQL.format(ts="t", i="i")},
    (ARRAY['reservations.handlers.notify_reservation_created',
           'reservations.handlers.complete_reservation',
           'payments.handlers.confirm_and_issue_ticket',
           'reservations.handlers.notify_reservation_cancelled'])[1 + i %% 4],
    (ARRAY['reservation-topic', 'seat-reserved-topic', 'payment-complete-topic',
           'reservation-topic'])[1 + i %% 4],
    i %% 3, i / 3, 1, t
FROM (SELECT i, now() - make_interval(secs => %(span)s * (1 - i::float8 / %(total)s)) AS t
      FROM generate_series(%(start)s, %(end)s) AS i) AS g
"""

NOTIFICATION_FILL_SQL = f"""
INSERT INTO reservations_notification (user_id, kind, message, event_id, read_at,
    created_at)
SELECT users.ids[1 + (i::bigint * 7919) %% users.n],
    (ARRAY['reservation_created', 'reservation_created', 'ticket_issued',
           'hold_expired'])[1 + i %% 4],
    'Seat A-' || (i %% 1000) || ' is held for you until ' || t::text || '.',
    {UUID7_SQL.format(ts="t", i="i + 1000000000")},
    CASE WHEN i %% 3 = 0 THEN t END, t
FROM (SELECT i, now() - make_interval(secs => %(span)s * (1 - i::float8 / %(total)s)) AS t
      FROM generate_series(%(start)s, %(end)s) AS i) AS g
CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids, count(*) AS n FROM auth_user
            WHERE username LIKE 'aged-user-%%') AS users
"""


def _fill(table: str, sql: str, total: int, extra: dict[str, int]) -> dict[str, object]:
    """Top `table` up to `total` rows, in chunks (one transaction each)."""
    have = _count(table)
    started = time.monotonic()
    span = settings.EVENTS_INBOX_RETENTION_DAYS * 86400
    for start in range(have, total, CHUNK):
        end = min(total, start + CHUNK) - 1
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                {"start": start, "end": end, "total": total, "span": span, **extra},
            )
    added = max(0, total - have)
    secs = time.monotonic() - started
    if added:
        _record(table, added, secs)
    return {"rows": _count(table), "added": added, "seconds": round(secs, 1)}


def _outbox_writer(stop: threading.Event, rows: list[int], topic: str) -> None:
    """Insert outbox rows, WRITER_ROWS_PER_TRANSACTION per transaction, until `stop`.

    Keeps at most ~20,000 rows pending so the relay, not the writers, sets the pace:
    a queue that grows without bound is not a steady state.
    """
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=False) as conn:
        seq = 0
        while not stop.is_set():
            pending = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM events_outboxevent LIMIT 20000) p"
            ).fetchone()[0]
            conn.commit()
            if pending >= 20_000:
                time.sleep(0.05)
                continue
            for _ in range(20):
                conn.execute(
                    """
                    INSERT INTO events_outboxevent (event_id, event_type,
                        schema_version, topic, key, payload, headers, aggregate_type,
                        aggregate_id, created_at, last_error)
                    SELECT gen_random_uuid(), 'AgingEvent', 1, %(topic)s,
                        'k' || ((%(seq)s + i) %% 5000),
                        jsonb_build_object('seq', %(seq)s + i,
                            'pad', repeat(md5((%(seq)s + i)::text), 30))::text,
                        jsonb_build_object('event_id', gen_random_uuid()::text,
                            'event_type', 'AgingEvent', 'schema_version', '1'),
                        'aging', 'k' || ((%(seq)s + i) %% 5000), now(), ''
                    FROM generate_series(1, %(n)s) AS i
                    """,
                    {"topic": topic, "seq": seq, "n": WRITER_ROWS_PER_TRANSACTION},
                )
                conn.commit()
                seq += WRITER_ROWS_PER_TRANSACTION
                rows.append(WRITER_ROWS_PER_TRANSACTION)


def _churn_outbox(target: int) -> dict[str, object]:
    """Push `target` rows through the outbox with the real relay draining it."""
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    topic = pipeline_settings().topic("reservation")
    create_topics()  # the relay checks that every topic of the pipeline exists
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "relay_outbox"],
        cwd=ROOT,
        env={**os.environ, "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix},
    )
    stop = threading.Event()
    written: list[int] = []
    writers = [
        threading.Thread(target=_outbox_writer, args=(stop, written, topic))
        for _ in range(WRITERS)
    ]
    started = time.monotonic()
    try:
        for writer in writers:
            writer.start()
        while sum(written) < target:
            time.sleep(0.5)
            if relay.poll() is not None:
                raise RuntimeError("relay_outbox exited during the churn")
            if not all(writer.is_alive() for writer in writers):
                raise RuntimeError("an outbox writer died during the churn")
        stop.set()
        for writer in writers:
            writer.join()
        deadline = time.monotonic() + 600
        while _pending() > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not drain the churned outbox")
            time.sleep(0.2)
    finally:
        stop.set()
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=60)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
    secs = time.monotonic() - started
    churned = sum(written)
    _record("events_outboxevent churn", churned, secs)
    return {
        "churned": churned,
        "seconds": round(secs, 1),
        "rows_per_s": round(churned / secs),
    }


def _pending() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_outboxevent")
        return int(cursor.fetchone()[0])


def _table_state(table: str) -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_del, autovacuum_count,
                last_autovacuum, pg_total_relation_size(relid)
            FROM pg_stat_user_tables WHERE relname = %s
            """,
            [table],
        )
        live, dead, ins, dels, vacuums, last, size = cursor.fetchone()
    return {
        "live_rows": live,
        "dead_rows": dead,
        "inserted_since_stats_reset": ins,
        "deleted_since_stats_reset": dels,
        "autovacuums": vacuums,
        "last_autovacuum": last.isoformat() if last else None,
        "total_bytes": size,
    }


def run() -> dict[str, object]:
    """Bring the aged database to steady state (topping up what earlier runs did)."""
    retention_days = settings.EVENTS_INBOX_RETENTION_DAYS
    kept = scaled(int(FLOW_PER_S * retention_days * 86400), minimum=20_000)
    churn_target = scaled(CHURN_ROWS, minimum=20_000)
    ledger = _ledger()
    # Retention runs first, as the housekeeping task does in production: what earlier
    # runs added ages out and the fill below tops up with recent rows.
    from events.maintenance.housekeeping import inbox_entries_prune

    pruned = inbox_entries_prune()
    _users(scaled(USERS, minimum=1000))
    inbox = _fill("events_inboxentry", INBOX_FILL_SQL, kept, {})
    notifications = _fill("reservations_notification", NOTIFICATION_FILL_SQL, kept, {})
    churned_before = ledger.get("events_outboxevent churn", (0, 0.0))[0]
    churn = (
        _churn_outbox(churn_target - churned_before)
        if churned_before < churn_target
        else {"churned": 0, "seconds": 0.0}
    )
    ledger = _ledger()
    return {
        "aging": {
            "flow_per_s": FLOW_PER_S,
            "retention_days": retention_days,
            "kept_rows_target": kept,
            "outbox_churn_target": churn_target,
            "outbox_churned_total": ledger.get("events_outboxevent churn", (0, 0))[0],
            "this_run": {
                "inbox_pruned": pruned,
                "inbox": inbox,
                "notifications": notifications,
                "outbox_churn": churn,
            },
            "tables": {
                t: _table_state(t)
                for t in (
                    "events_outboxevent",
                    "events_inboxentry",
                    "reservations_notification",
                )
            },
            "autovacuum": _autovacuum_settings(),
        }
    }


def _autovacuum_settings() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name LIKE 'autovacuum%%'"
        )
        server = dict(cursor.fetchall())
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
            "('events_outboxevent', 'events_inboxentry') AND reloptions IS NOT NULL"
        )
        tables = {name: ",".join(options) for name, options in cursor.fetchall()}
    return {**server, **{f"table:{k}": v for k, v in tables.items()}}
