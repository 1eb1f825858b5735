"""Sharded relays against the real database and broker: one leader per shard, per-key
order while relays die and start, and a shard count that cannot change under them."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from django.db import connection

from events.models import OutboxEvent, OutboxSharding
from events.relay.reader import Reader
from events.relay.shard_count import ShardCountChanged, check_shard_count
from events.relay.shard_lock_keys import (
    LEGACY_LEADER_LOCK,
    MEMBER_LOCK_CLASS,
    SHARD_LOCK_CLASS,
    member_key,
)
from events.relay.shard_sql import shard_statistics_name, shards_condition
from events.relay.shards import (
    ShardClaims,
    ShardFilter,
    share,
)
from events.relay.window import FETCH_SQL, Window, fetch_sql
from tests.events.outbox_rows import (
    insert_outbox_rows,
    new_topic_name,
)
from tests.events.pipeline import process_log
from tests.events.relay_process import start_relay_process
from tests.events.test_relay_reconnect import assert_complete_and_in_order
from tests.kafka_helpers import make_topic
from tests.waiting import wait_until


def test_a_share_lets_every_relay_lead_and_a_standby_wait() -> None:
    assert share(1, []) == 1
    assert share(1, [1]) == 1  # a leader keeps the one shard; a standby waits for it
    assert share(1, [0, 1]) == 1
    assert share(3, []) == 3
    assert share(3, [0]) == 1, "a newcomer below its part: keep to the floor"
    assert share(3, [1]) == 2
    assert share(3, [1, 1]) == 1
    assert share(4, [2, 0]) == 1
    assert share(4, [1, 1]) == 2
    assert share(6, [2, 2, 0]) == 1
    # Settled (nobody below the floor), the shares cover every shard.
    for shards in range(1, 9):
        for members in range(1, 9):
            floor = shards // members
            assert share(shards, [floor] * (members - 1)) * members >= shards


def test_a_relay_of_every_shard_reads_without_a_condition() -> None:
    assert fetch_sql(ShardFilter(1, (0,))) == FETCH_SQL
    assert fetch_sql(ShardFilter(3, (0, 1, 2))) == FETCH_SQL
    assert shards_condition(3, (0, 2)) in fetch_sql(ShardFilter(3, (0, 2)))
    assert ShardFilter(1, (0,)).describe() == ""
    assert ShardFilter(3, (0, 2)).describe() == " of shards 0, 2 of 3"


def connect() -> psycopg.Connection[Any]:
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"],
        password=s["PASSWORD"],
        host=s["HOST"],
        port=s["PORT"],
        autocommit=True,
    )


@pytest.mark.django_db(transaction=True)
def test_each_shard_reader_reads_only_its_keys_and_together_they_read_everything() -> (
    None
):
    insert_outbox_rows(30_000, topic="shards", keys=60)
    seen: dict[int, set[str]] = {}
    ids: list[int] = []
    with connect() as conn:
        ShardClaims(conn, 3).join()  # makes the statistics
        # Gathered as autovacuum would (join gathers them only when it sees them stale,
        # and the insert's counts may not have reached the statistics yet).
        conn.execute("ANALYZE events_outboxevent")
        # A backlog is read in id order up to the batch, not sorted whole on each read.
        plan = conn.execute(
            "EXPLAIN " + fetch_sql(ShardFilter(3, (0, 2))), Window().params(100)
        ).fetchall()
        assert any("outbox_pending_idx" in line for (line,) in plan), plan
        assert not any("Sort" in line for (line,) in plan), plan
        for shard in range(3):
            reader = Reader(conn, batch_size=30_000, shards=ShardFilter(3, (shard,)))
            rows, _ = reader.read(Window())
            reader.close()
            seen[shard] = {row[2] for row in rows}
            ids += [row[0] for row in rows]
            expected = conn.execute(
                "SELECT DISTINCT key FROM events_outboxevent WHERE "
                + shards_condition(3, (shard,))
            ).fetchall()
            assert seen[shard] == {key for (key,) in expected}
    assert sorted(ids) == list(
        OutboxEvent.objects.order_by("id").values_list("id", flat=True)
    )
    assert all(seen.values()), "a shard of 60 keys got none"
    assert not (seen[0] & seen[1] or seen[1] & seen[2] or seen[0] & seen[2])


def locks_of(pid: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
            [pid],
        )
        return cursor.fetchone()[0]


def close(conn: psycopg.Connection[Any]) -> None:
    """Close `conn` and wait until its backend has let go of its locks (a relay's
    death, as the others see it)."""
    pid = conn.info.backend_pid
    conn.close()
    wait_until(lambda: locks_of(pid) == 0, what="the closed session's locks freed")


@pytest.mark.django_db(transaction=True)
def test_relays_share_the_shards_fairly_and_take_over_a_dead_ones() -> None:
    conns = [connect() for _ in range(3)]
    try:
        a, b, c = (ShardClaims(conn, 3) for conn in conns)
        a.join()
        a.settle()
        assert a.held == {0, 1, 2}, "a lone relay leads every shard"
        b.join()
        assert a.reassess(), "a leads more than its part while b leads none"
        a.settle()
        b.settle()
        assert (len(a.held), len(b.held)) == (1, 2)
        c.join()
        assert not a.reassess()
        assert b.reassess()
        b.settle()
        c.settle()
        assert sorted(len(x.held) for x in (a, b, c)) == [1, 1, 1]
        assert a.held | b.held | c.held == {0, 1, 2}
        orphan = set(a.held)
        close(conns[0])  # a dies: PostgreSQL frees its locks
        changed = [b.reassess(), c.reassess()]
        assert changed.count(True) == 1, "exactly one survivor claims the orphan"
        assert b.held | c.held == {0, 1, 2} and orphan <= b.held | c.held
        assert not b.held & c.held
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.django_db(transaction=True)
def test_no_relay_stands_by_while_another_leads_two_more() -> None:
    conns = [connect() for _ in range(3)]
    try:
        relays = [ShardClaims(conn, 4) for conn in conns]
        for relay in relays:
            relay.join()
            for _ in range(2):  # each reassesses, those above their part let go
                for other in relays[: relays.index(relay) + 1]:
                    other.reassess()
                    other.settle()
        assert sorted(len(r.held) for r in relays) == [1, 1, 2]
        assert set().union(*(r.held for r in relays)) == {0, 1, 2, 3}
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.django_db(transaction=True)
def test_with_one_shard_a_standby_waits_and_takes_over() -> None:
    leader, standby = connect(), connect()
    try:
        first, second = ShardClaims(leader, 1), ShardClaims(standby, 1)
        first.join()
        first.settle()
        second.join()
        second.settle()
        assert (first.held, second.held) == ({0}, set())
        assert not first.reassess(), "a standby joining moves nothing"
        close(leader)
        assert second.reassess() and second.held == {0}
    finally:
        leader.close()
        standby.close()


@pytest.mark.django_db(transaction=True)
def test_a_sharded_relay_never_leads_beside_a_relay_of_before_shards() -> None:
    """A relay of an earlier version leads everything on the single leader lock and
    knows nothing of member locks."""
    old, new = connect(), connect()
    try:
        old.execute("SELECT pg_advisory_lock(%s, %s)", LEGACY_LEADER_LOCK)
        with pytest.raises(ShardCountChanged, match="leads the whole outbox"):
            ShardClaims(new, 3).join()
        close(old)
        ShardClaims(new, 3).join()
        old = connect()
        taken = old.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", LEGACY_LEADER_LOCK
        ).fetchone()
        assert taken == (False,), "an old relay could lead beside sharded ones"
    finally:
        old.close()
        new.close()


@pytest.mark.django_db(transaction=True)
def test_relays_started_together_with_a_new_count_all_run() -> None:
    """Both have their member lock before either checks: neither is in the way."""
    conns = [connect() for _ in range(3)]
    try:
        ShardClaims(conns[0], 3).join()
        close(conns[0])
        for slot, conn in enumerate(conns[1:]):
            conn.execute(
                "SELECT pg_advisory_lock(%s, %s)",
                (MEMBER_LOCK_CLASS, member_key(2, slot)),
            )
        for conn in conns[1:]:
            check_shard_count(conn, 2)
        assert OutboxSharding.objects.get().shards == 2
    finally:
        for conn in conns:
            conn.close()


def shard_statistics() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT stxname FROM pg_statistic_ext WHERE stxname LIKE 'outbox_shard_%%'"
        )
        return [name for (name,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_a_relay_with_another_shard_count_is_refused_while_relays_run() -> None:
    first, second, third = connect(), connect(), connect()
    try:
        ShardClaims(first, 2).join()
        with pytest.raises(
            ShardCountChanged, match="is 3, but running relays divide the outbox into 2"
        ):
            ShardClaims(second, 3).join()
        assert OutboxSharding.objects.get().shards == 2
        assert shard_statistics() == [shard_statistics_name(2)]
        close(first)  # every relay of the old count stopped: the change is safe
        ShardClaims(third, 3).join()
        assert OutboxSharding.objects.get().shards == 3
        assert shard_statistics() == [shard_statistics_name(3)]
    finally:
        for conn in (first, second, third):
            conn.close()


@pytest.mark.django_db(transaction=True)
def test_relay_outbox_explains_why_it_refuses_another_shard_count(
    kafka_topics, subprocess_env
) -> None:
    running = start_relay_process({**subprocess_env, "OUTBOX_RELAY_SHARDS": "2"})
    try:
        wait_until(
            lambda: "relay is the leader" in process_log(running),
            timeout=60,
            what="the two-shard relay leading",
        )
        refused = start_relay_process({**subprocess_env, "OUTBOX_RELAY_SHARDS": "3"})
        assert refused.wait(timeout=60) == 1
        log = process_log(refused)
        assert "CommandError: OUTBOX_RELAY_SHARDS is 3" in log
        assert "Stop every relay_outbox process" in log
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0


class Writer:
    """Inserts rows for `keys` keys in small committed batches until stopped."""

    def __init__(self, topic: str, keys: int) -> None:
        self.topic, self.keys, self.count = topic, keys, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.01):
                insert_outbox_rows(
                    100, topic=self.topic, keys=self.keys, start=self.count
                )
                self.count += 100
        finally:
            connection.close()

    @contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def unsent(topic: str) -> int:
    return OutboxEvent.objects.filter(topic=topic, parked_at__isnull=True).count()


def start_sharded_relay(env: dict[str, str]) -> subprocess.Popen[bytes]:
    relay = start_relay_process(
        {**env, "OUTBOX_RELAY_SHARDS": "3"},
        "--poll-interval",
        "0.2",
        "--batch-size",
        "200",
    )
    wait_until(
        lambda: (
            "relay is the leader" in process_log(relay)
            or "hot standby" in process_log(relay)
        ),
        timeout=60,
        what="a relay started",
    )
    return relay


def stop(relay: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if relay.poll() is None:
        relay.send_signal(sig)
    relay.wait(timeout=30)


class LeaderSampler:
    """Samples, every 0.1 s, how many relays lead a shard; keeps the most seen."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.1):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype ="
                        " 'advisory' AND granted AND classid::int = %s AND database ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())",
                        [SHARD_LOCK_CLASS],
                    )
                    self.most = max(self.most, cursor.fetchone()[0])
        finally:
            connection.close()

    @contextmanager
    def running(self) -> Iterator[LeaderSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_three_relays_keep_per_key_order_while_relays_are_killed_and_started(
    kafka_topics, subprocess_env
) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "shardkill"))
    relays = [start_sharded_relay(subprocess_env) for _ in range(3)]
    rng = random.Random(16)
    try:
        with (
            LeaderSampler().running() as leaders,
            Writer(topic, keys=60).running() as writer,
        ):
            for _ in range(5):
                target = writer.count + 2_000
                wait_until(lambda t=target: writer.count >= t, what="rows written")
                victim = relays.pop(rng.randrange(len(relays)))
                stop(victim, signal.SIGKILL)
                relays.append(start_sharded_relay(subprocess_env))
        wait_until(lambda: unsent(topic) == 0, timeout=90, what="everything sent")
        assert leaders.most == 3, "the three relays never led a shard each at once"
    finally:
        for relay in relays:
            stop(relay)
    duplicates = assert_complete_and_in_order(topic, writer.count, keys=60)
    print(f"{writer.count} rows, 5 relays killed: {duplicates} sent again")


@pytest.mark.django_db(transaction=True)
def test_shards_move_between_relays_without_a_row_sent_twice(
    kafka_topics, subprocess_env
) -> None:
    """Relays join and leave cleanly (SIGTERM) while rows are written: each move of a
    shard waits for its old leader to record what it sent, so nothing is sent twice."""
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "shardmove"))
    relays = [start_sharded_relay(subprocess_env)]
    started = list(relays)
    try:
        with Writer(topic, keys=60).running() as writer:
            for _ in range(6):
                target = writer.count + 1_500
                wait_until(lambda t=target: writer.count >= t, what="rows written")
                if len(relays) < 3:
                    relays.append(start_sharded_relay(subprocess_env))
                    started.append(relays[-1])
                else:
                    stop(relays.pop(0))
        wait_until(lambda: unsent(topic) == 0, timeout=90, what="everything sent")
        released = sum("relay released shard" in process_log(r) for r in started)
        assert released >= 1, "no shard moved"
    finally:
        for relay in relays:
            stop(relay)
    assert assert_complete_and_in_order(topic, writer.count, keys=60) == 0, (
        "a row was sent twice"
    )
