"""The shard count every relay of a database must share, stored and checked at join.

A relay with another count than the running relays refuses (`ShardCountChanged`): a key
would map to two shards with two leaders and lose its order. With every relay of the
old count stopped, the first relay of the new one stores it (events.models.
OutboxSharding): the old layout has no leader left, so nothing of it is in flight, and
pending rows go to their new shards in id order. Relays started together with the same
new count all pass: only members of another count are in the way.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from events.relay.shard_lock_keys import (
    COUNT_CHECK_LOCK,
    LEGACY_LEADER_LOCK,
    MEMBER_LOCK_CLASS,
    count_of_member,
)

# One logger for everything the relay says.
logger = logging.getLogger("events.relay")

MEMBERS_SQL = """
    SELECT objid::int FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
        AND classid::int = %s AND pid <> pg_backend_pid()
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
STORE_SQL = """
    INSERT INTO events_outboxsharding (id, shards, changed_at) VALUES (1, %s, now())
    ON CONFLICT (id) DO UPDATE SET shards = EXCLUDED.shards, changed_at = now()
"""


class ShardCountChanged(RuntimeError):
    """This relay's shard count differs from the live relays'."""


def check_shard_count(conn: psycopg.Connection[Any], shard_count: int) -> None:
    """Refuse to run beside relays of another count; store ours if it is new.

    Call with this relay's member lock held, so relays that check after us see it.
    """
    if shard_count > 1:
        _refuse_beside_a_single_leader(conn, shard_count)
    with conn.transaction():
        # One relay at a time compares and stores.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", COUNT_CHECK_LOCK)
        row = conn.execute(
            "SELECT shards FROM events_outboxsharding WHERE id = 1"
        ).fetchone()
        stored = None if row is None else int(row[0])
        if stored == shard_count:
            return
        others = sorted(
            {
                count_of_member(key)
                for (key,) in conn.execute(MEMBERS_SQL, (MEMBER_LOCK_CLASS,))
            }
            - {shard_count}
        )
        if others:
            raise ShardCountChanged(
                f"OUTBOX_RELAY_SHARDS is {shard_count}, but running relays divide the "
                f"outbox into {' or '.join(map(str, others))} shards. A key would map "
                f"to two shards with two leaders and lose its order. Stop every "
                f"relay_outbox process, then start them all with the new count "
                f"(pending rows go to their new shards), or set "
                f"OUTBOX_RELAY_SHARDS={others[0]}."
            )
        conn.execute(STORE_SQL, (shard_count,))
    if stored is not None:
        logger.warning(
            "outbox shards changed from %d to %d (no relay of %d was running)",
            stored,
            shard_count,
            stored,
        )


def _refuse_beside_a_single_leader(
    conn: psycopg.Connection[Any], shard_count: int
) -> None:
    """Hold the single leader lock shared for the session, or refuse: a relay leads
    the whole outbox on it (one shard, or a version before shards)."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock_shared(%s, %s)", LEGACY_LEADER_LOCK
    ).fetchone()
    if not (row and row[0]):
        raise ShardCountChanged(
            f"OUTBOX_RELAY_SHARDS is {shard_count}, but a relay leads the whole "
            f"outbox (OUTBOX_RELAY_SHARDS=1, or a version without shards). Stop every "
            f"relay_outbox process, then start them all with the new count."
        )
