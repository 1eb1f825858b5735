"""The planner's statistics on the shard expression, kept by the relays of a shard count.

What share of the rows each shard holds (extended statistics on the expression: nothing
to maintain on insert, unlike an index). Without them the planner guesses a shard holds
0.5 % of the rows, and reads a backlog by sorting all of it on every read instead of
walking the pending index in id order up to the batch size (bench/HISTORY.md). Made by
the relays, not a migration: the expression holds the shard count.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import errors, sql

from events.relay.shard_lock_keys import STATISTICS_LOCK
from events.relay.shard_sql import shard_expression, shard_statistics_name

# One logger for everything the relay says.
logger = logging.getLogger("events.relay")

CREATE_SQL = (
    "CREATE STATISTICS IF NOT EXISTS {name} ON ({expression}) FROM events_outboxevent"
)
# Another count's statistics: the relays read with this count's expression only.
STALE_SQL = """
    SELECT n.nspname, s.stxname FROM pg_statistic_ext AS s
    JOIN pg_namespace AS n ON n.oid = s.stxnamespace
    WHERE s.stxrelid = 'events_outboxevent'::regclass
        AND s.stxname LIKE 'outbox\\_shard\\_%%\\_stats' AND s.stxname <> %s
"""
# Gather them at join when never gathered, or when many rows changed since the last
# analyze (a backlog built up while no relay ran; autovacuum may not have come yet).
STALE_GATHER_SQL = """
    SELECT NOT EXISTS (SELECT 1 FROM pg_stats_ext_exprs WHERE statistics_name = %s)
        OR coalesce((SELECT n_mod_since_analyze FROM pg_stat_user_tables
                     WHERE relid = 'events_outboxevent'::regclass), 0) > 1000
"""


def ensure_shard_statistics(conn: psycopg.Connection[Any], shard_count: int) -> None:
    """Create this count's statistics (none with one shard), drop the others', and
    gather them if they never were or are stale. One relay at a time (an advisory lock).

    A role that may not (not the table's owner) gets a warning, and reads without them.
    """
    keep = shard_statistics_name(shard_count) if shard_count > 1 else ""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", STATISTICS_LOCK)
    try:
        for schema, name in conn.execute(STALE_SQL, (keep,)).fetchall():
            conn.execute(
                sql.SQL("DROP STATISTICS IF EXISTS {}").format(
                    sql.Identifier(schema, name)
                )
            )
        if keep:
            conn.execute(
                CREATE_SQL.format(name=keep, expression=shard_expression(shard_count))
            )
            row = conn.execute(STALE_GATHER_SQL, (keep,)).fetchone()
            if row and row[0]:
                _analyze(conn)
    except errors.InsufficientPrivilege as exc:
        logger.warning(
            "cannot keep the shard statistics (%s): a backlog may be read slowly; "
            "let the relay's role own events_outboxevent, or run as its owner: %s",
            str(exc).strip().splitlines()[0],
            CREATE_SQL.format(name=keep, expression=shard_expression(shard_count)),
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", STATISTICS_LOCK)


def _analyze(conn: psycopg.Connection[Any]) -> None:
    """Gather them now (a sample of at most 30,000 rows): a relay starting on a backlog
    should not read it with a plan that sorts it. Not behind a long-running vacuum:
    autovacuum's next analyze gathers them then."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute("ANALYZE events_outboxevent")
    except errors.LockNotAvailable:
        logger.warning(
            "ANALYZE of the outbox waited 5 s for a lock; autovacuum will do it"
        )
