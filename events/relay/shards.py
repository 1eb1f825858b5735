"""Which outbox shards a relay leads: its share of S, claimed with advisory locks.

The outbox is divided into S shards (OUTBOX_RELAY_SHARDS) by a hash of the event key
(events.relay.shard_sql). Each shard has at most one leader, the relay holding its lock
(events.relay.shard_lock_keys). The m members of one count share them (`share`): each
may lead up to ceil(S / m), but while another member leads fewer than floor(S / m)
(it just joined) the others keep to floor(S / m), so it gets its part and no relay
stands by while another leads two more than it. With S = 1 that is the hot standby of
before: the leader keeps its shard, a standby claims it only once it is free.

A relay claims free shards up to its share at once, even while its pipeline sends (the
claim is read from the next pipeline on), and lets go of those above it only between
pipelines (events.relay.outbox_relay), after every batch it produced is recorded, so
the next leader of a shard starts from rows nobody is sending. A dead relay's locks end
with its session: the others see the shards free at their next check (one poll
interval) and claim them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from events.relay.shard_count import check_shard_count
from events.relay.shard_lock_keys import (
    MAX_MEMBERS,
    MAX_SHARDS,
    MEMBER_LOCK_CLASS,
    count_of_member,
    member_key,
    shard_lock_class,
)
from events.relay.shard_statistics import ensure_shard_statistics

# One logger for everything the relay says.
logger = logging.getLogger("events.relay")

LOCKS_SQL = """
    SELECT classid::int, objid::int, pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
        AND classid::int IN (%s, %s)
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def share(shard_count: int, others_lead: list[int]) -> int:
    """How many shards a relay should lead, given what the other members lead."""
    members = len(others_lead) + 1
    floor = shard_count // members
    ceil = -(-shard_count // members)
    return floor if any(led < floor for led in others_lead) else ceil


@dataclass(frozen=True)
class ShardFilter:
    """The shards one pipeline reads."""

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
    """The member lock and shard locks one relay session holds on its connection.

    Contract: `join()` first (a member lock, the count check, the statistics);
    `reassess()` may run while a pipeline sends (it only claims), `settle()` only
    between pipelines (it also releases).
    """

    def __init__(self, conn: psycopg.Connection[Any], shard_count: int) -> None:
        if not 1 <= shard_count <= MAX_SHARDS:
            raise ValueError(f"OUTBOX_RELAY_SHARDS must be from 1 to {MAX_SHARDS}")
        self._conn = conn
        self.shard_count = shard_count
        self._lock_class = shard_lock_class(shard_count)
        self.held: set[int] = set()

    def join(self) -> None:
        """Take a member lock, check (or store) the shard count, keep the statistics."""
        for slot in range(MAX_MEMBERS):
            if self._try_lock(MEMBER_LOCK_CLASS, member_key(self.shard_count, slot)):
                break
        else:
            raise RuntimeError(f"more than {MAX_MEMBERS} relays on one database")
        check_shard_count(self._conn, self.shard_count)
        ensure_shard_statistics(self._conn, self.shard_count)

    def filter(self) -> ShardFilter:
        return ShardFilter(self.shard_count, tuple(sorted(self.held)))

    def reassess(self) -> bool:
        """Claim free shards up to this relay's share; whether the pipeline must restart
        (it has new shards to read, or more than its share to give up)."""
        target, free = self._survey()
        claimed = self._claim(free, target)
        return claimed or len(self.held) > target

    def settle(self) -> None:
        """Claim up to this relay's share, release what is above it (no pipeline runs)."""
        target, free = self._survey()
        self._claim(free, target)
        for shard in sorted(self.held, reverse=True)[: max(len(self.held) - target, 0)]:
            self._conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (self._lock_class, shard)
            )
            self.held.discard(shard)
            logger.info("relay released shard %d of %d", shard, self.shard_count)

    def _survey(self) -> tuple[int, list[int]]:
        """This relay's share now, and the shards no relay holds."""
        rows = self._conn.execute(
            LOCKS_SQL, (self._lock_class, MEMBER_LOCK_CLASS)
        ).fetchall()
        me = self._conn.info.backend_pid
        members = {
            pid
            for lock_class, key, pid in rows
            if lock_class == MEMBER_LOCK_CLASS
            and count_of_member(key) == self.shard_count
            and pid != me
        }
        led: dict[int, int] = {}
        taken = set()
        for lock_class, key, pid in rows:
            if lock_class == self._lock_class and key < self.shard_count:
                taken.add(key)
                led[pid] = led.get(pid, 0) + 1
        target = share(self.shard_count, [led.get(pid, 0) for pid in members])
        free = [shard for shard in range(self.shard_count) if shard not in taken]
        return target, free

    def _claim(self, free: list[int], target: int) -> bool:
        claimed = False
        for shard in free:
            if len(self.held) >= target:
                break
            if self._try_lock(self._lock_class, shard):
                self.held.add(shard)
                claimed = True
        return claimed

    def _try_lock(self, lock_class: int, key: int) -> bool:
        row = self._conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (lock_class, key)
        ).fetchone()
        return bool(row and row[0])
