"""Which outbox shards a relay leads: a fair share of S, claimed with advisory locks.

The outbox is divided into S shards (OUTBOX_RELAY_SHARDS) by a hash of the event key,
computed by PostgreSQL when a relay reads (`shard_expression`), so writers know nothing
of shards and S is the relays' setting alone; with S > 1 the relays keep extended
statistics on the expression, so the planner knows each shard's share of the rows.
`hashtextextended` is the hash PostgreSQL's own hash partitioning places rows with, so
it cannot change under pg_upgrade; a key always maps to the same shard.

Each shard has at most one leader: the relay holding its session advisory lock
(SHARD_LOCK_CLASS, shard). With S = 1 that lock is the single leader lock of earlier
versions, so a mixed upgrade still has one leader. Every relay also holds a member slot
(MEMBER_LOCK_CLASS, slot), and the number of members sets the fair share, ceil(S /
members): a relay claims free shards up to it and lets go of those above it. It lets go
only between pipelines (events.relay.outbox_relay), after every batch it produced is
recorded, so the next leader of a shard starts from rows nobody is sending. A dead
relay's locks end with its session: the others see the shards free at their next check
(one poll interval) and claim them.

S is stored (events.models.OutboxSharding). A relay with another S refuses to start
while a relay of the stored S is alive (`ShardCountChanged`): a key would map to two
shards with two leaders. With every relay stopped the first one to start stores its S:
the old layout has no leader left, so nothing of it is in flight.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import psycopg

# One logger for everything the relay says.
logger = logging.getLogger("events.relay")

SHARD_LOCK_CLASS = 7_002
MEMBER_LOCK_CLASS = 7_003
SHARDING_CHANGE_LOCK = (7_004, 0)
MAX_MEMBERS = 1_024


def shard_expression(shard_count: int) -> str:
    """The shard of an outbox row (of its `key`), as SQL. The count is a literal: the
    planner uses extended statistics only for the very same expression."""
    return f"mod(hashtextextended(key, 0) & 9223372036854775807, {int(shard_count)})"


def shards_condition(shard_count: int, shards: tuple[int, ...]) -> str:
    """SQL keeping the rows of `shards`."""
    listed = ", ".join(str(int(shard)) for shard in shards)
    return f"{shard_expression(shard_count)} IN ({listed})"


def shard_statistics_name(shard_count: int) -> str:
    return f"outbox_shard_{int(shard_count)}_stats"


# What share of the rows each shard holds, for the planner (extended statistics on the
# expression: nothing to maintain on insert, unlike an index). Without them it guesses
# a shard holds 0.5 % of the rows, and reads a backlog by sorting all of it on every
# read instead of walking the pending index in id order up to the batch size.
SHARD_STATISTICS_SQL = """
    CREATE STATISTICS IF NOT EXISTS {name} ON ({expression}) FROM events_outboxevent
"""
# Another count's statistics: the relays read with this count's expression only.
STALE_SHARD_STATISTICS_SQL = """
    SELECT stxname FROM pg_statistic_ext
    WHERE stxrelid = 'events_outboxevent'::regclass
        AND stxname LIKE 'outbox\\_shard\\_%%\\_stats' AND stxname <> %s
"""
SHARD_STATISTICS_LOCK = (7_004, 1)

ADVISORY_LOCKS_SQL = """
    SELECT classid::int, objid::int, pid = pg_backend_pid()
    FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
        AND classid::int IN (%(shard_class)s, %(member_class)s)
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class ShardCountChanged(RuntimeError):
    """This relay's shard count differs from the live relays'."""


def fair_share(shard_count: int, members: int) -> int:
    """The most shards one of `members` relays should lead."""
    return math.ceil(shard_count / max(members, 1))


@dataclass(frozen=True)
class ShardFilter:
    """The shards one pipeline reads: the reader's extra condition and parameters."""

    shard_count: int
    shards: tuple[int, ...]

    @property
    def everything(self) -> bool:
        """Whether these are all the shards (the reader then needs no condition)."""
        return len(self.shards) == self.shard_count

    def describe(self) -> str:
        """ " of shards 0, 2 of 3" for a log line; nothing when there is one shard."""
        if self.shard_count == 1:
            return ""
        plural = "s" if len(self.shards) > 1 else ""
        listed = ", ".join(str(shard) for shard in self.shards)
        return f" of shard{plural} {listed} of {self.shard_count}"


class ShardClaims:
    """The member slot and shard locks one relay session holds on its connection.

    Contract: `join()` first (takes a slot, checks the shard count); `reassess()` may
    run while a pipeline sends (it only claims; a claim is read from the next
    pipeline on), `settle()` only between pipelines (it also releases).
    """

    def __init__(self, conn: psycopg.Connection[Any], shard_count: int) -> None:
        if shard_count < 1:
            raise ValueError("OUTBOX_RELAY_SHARDS must be at least 1")
        self._conn = conn
        self.shard_count = shard_count
        self.held: set[int] = set()

    def join(self) -> None:
        """Take a member slot, then check (or store) the shard count."""
        for slot in range(MAX_MEMBERS):
            if self._try_lock(MEMBER_LOCK_CLASS, slot):
                break
        else:
            raise RuntimeError(f"more than {MAX_MEMBERS} relays on one database")
        self._check_shard_count()
        self._ensure_shard_statistics()

    def filter(self) -> ShardFilter:
        return ShardFilter(self.shard_count, tuple(sorted(self.held)))

    def reassess(self) -> bool:
        """Claim free shards up to the fair share; whether the pipeline must restart
        (it has new shards to read, or more than its share to give up)."""
        fair, free = self._survey()
        claimed = self._claim(free, fair)
        return claimed or len(self.held) > fair

    def settle(self) -> None:
        """Claim up to the fair share and release what is above it (no pipeline runs)."""
        fair, free = self._survey()
        self._claim(free, fair)
        for shard in sorted(self.held, reverse=True)[: max(len(self.held) - fair, 0)]:
            self._conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (SHARD_LOCK_CLASS, shard)
            )
            self.held.discard(shard)
            logger.info("relay released shard %d of %d", shard, self.shard_count)

    def _survey(self) -> tuple[int, list[int]]:
        """The fair share now, and the shards no relay holds."""
        rows = self._conn.execute(
            ADVISORY_LOCKS_SQL,
            {"shard_class": SHARD_LOCK_CLASS, "member_class": MEMBER_LOCK_CLASS},
        ).fetchall()
        members = sum(1 for lock_class, _, _ in rows if lock_class == MEMBER_LOCK_CLASS)
        taken = {
            objid
            for lock_class, objid, _ in rows
            if lock_class == SHARD_LOCK_CLASS and objid < self.shard_count
        }
        free = [shard for shard in range(self.shard_count) if shard not in taken]
        return fair_share(self.shard_count, members), free

    def _claim(self, free: list[int], fair: int) -> bool:
        claimed = False
        for shard in free:
            if len(self.held) >= fair:
                break
            if self._try_lock(SHARD_LOCK_CLASS, shard):
                self.held.add(shard)
                claimed = True
        return claimed

    def _try_lock(self, lock_class: int, key: int) -> bool:
        row = self._conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (lock_class, key)
        ).fetchone()
        return bool(row and row[0])

    def _ensure_shard_statistics(self) -> None:
        """The planner's statistics for this shard count's expression (none with one
        shard), gathered now."""
        keep = shard_statistics_name(self.shard_count) if self.shard_count > 1 else ""
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", SHARD_STATISTICS_LOCK)
        try:
            for (name,) in self._conn.execute(STALE_SHARD_STATISTICS_SQL, (keep,)):
                self._conn.execute(f'DROP STATISTICS IF EXISTS "{name}"')
            if keep:
                self._conn.execute(
                    SHARD_STATISTICS_SQL.format(
                        name=keep, expression=shard_expression(self.shard_count)
                    )
                )
                # A sample of at most 30,000 rows: quick, and a relay starting on a
                # backlog (after an outage) should not read it with a stale plan.
                self._conn.execute("ANALYZE events_outboxevent")
        finally:
            self._conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", SHARD_STATISTICS_LOCK
            )

    def _check_shard_count(self) -> None:
        with self._conn.transaction():
            # One relay at a time compares and stores, so two relays started with
            # different counts cannot both see an empty database.
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", SHARDING_CHANGE_LOCK
            )
            row = self._conn.execute(
                "SELECT shards FROM events_outboxsharding WHERE id = 1"
            ).fetchone()
            if row is not None and row[0] == self.shard_count:
                return
            others = sum(
                1
                for lock_class, _, mine in self._conn.execute(
                    ADVISORY_LOCKS_SQL,
                    {"shard_class": -1, "member_class": MEMBER_LOCK_CLASS},
                ).fetchall()
                if not mine
            )
            if row is not None and others:
                raise ShardCountChanged(
                    f"OUTBOX_RELAY_SHARDS is {self.shard_count}, but {others} running "
                    f"relay(s) divide the outbox into {row[0]} shards. A key would "
                    f"map to two shards with two leaders and lose its order. Stop "
                    f"every relay_outbox process, then start them all with the new "
                    f"count (pending rows go to their new shards), or set "
                    f"OUTBOX_RELAY_SHARDS={row[0]}."
                )
            self._conn.execute(
                "INSERT INTO events_outboxsharding (id, shards, changed_at)"
                " VALUES (1, %s, now())"
                " ON CONFLICT (id) DO UPDATE SET shards = EXCLUDED.shards,"
                " changed_at = EXCLUDED.changed_at",
                (self.shard_count,),
            )
            if row is not None:
                logger.warning(
                    "outbox shards changed from %d to %d (no other relay was running)",
                    row[0],
                    self.shard_count,
                )
