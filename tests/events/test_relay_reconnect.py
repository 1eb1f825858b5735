"""The relay survives losing its database connections: it reconnects, competes for
leadership again, and nothing is lost or reordered.

PostgreSQL terminating a backend (`pg_terminate_backend`, what a restart or an
administrator does to a session: psycopg's AdminShutdown) is the real fault here.
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import ExitStack

import pytest
from django.db import connection

from events.relay.leadership import RELAY_LOCK_KEY, reconnect_delay
from tests.events.outbox_rows import (
    first_occurrences,
    insert_outbox_rows,
    new_topic_name,
    sequences_by_key,
)
from tests.events.pipeline import process_log
from tests.events.relay_process import recording_blocked, start_relay_process
from tests.events.test_relay import unsent
from tests.kafka_helpers import make_topic, read_topic
from tests.waiting import wait_until


def terminate_relay_connections() -> int:
    """Cut every connection of the relays on this database; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'relay_outbox' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def terminate_the_leaders_connection() -> int:
    """Cut the connection that holds the leader lock, if a relay leads; return 1 or 0.

    Cutting "every relay connection" may hit only the recorder's, which reconnects by
    itself without ending the session.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            list(RELAY_LOCK_KEY),
        )
        return cursor.fetchone()[0]


def assert_complete_and_in_order(topic: str, count: int, keys: int) -> int:
    """Every event arrived, each key's first arrivals in order; return duplicates."""
    messages = read_topic(topic, expected=count, timeout=60)
    by_key = sequences_by_key(messages)
    assert len(by_key) == keys
    seqs = [seq for key_seqs in by_key.values() for seq in key_seqs]
    assert set(seqs) == set(range(count)), "an event was lost"
    for key, key_seqs in by_key.items():
        firsts = first_occurrences(key_seqs)
        assert firsts == sorted(firsts), f"key {key} out of order"
    return len(seqs) - count


@pytest.mark.django_db(transaction=True)
def test_the_relay_reconnects_after_its_connections_are_cut_and_loses_nothing(
    kafka_topics, subprocess_env
) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "cut"))
    insert_outbox_rows(20_000, topic=topic, keys=40)
    relay = None

    def leaderships() -> int:
        return process_log(relay).count("relay is the leader") if relay else 0

    try:
        # Each cut lands mid-drain, whatever the relay's speed: each session stalls
        # where it cannot record a locked row, so rows are pending when it is cut.
        with recording_blocked(topic, at=12_000) as second:
            with recording_blocked(topic, at=5_000) as first:
                relay = start_relay_process(subprocess_env, "--batch-size", "100")
                wait_until(first.holds_back_a_relay, timeout=60, what="a first stall")
                assert unsent(topic) >= 15_000
                assert terminate_relay_connections() >= 1
            insert_outbox_rows(2_000, topic=topic, keys=40, start=20_000)
            wait_until(lambda: leaderships() >= 2, timeout=30, what="a new session")
            wait_until(second.holds_back_a_relay, timeout=60, what="a second stall")
            assert unsent(topic) >= 8_000 + 2_000
            assert terminate_the_leaders_connection() == 1
        wait_until(lambda: unsent(topic) == 0, timeout=120, what="all sent")
        wait_until(lambda: leaderships() >= 3, timeout=30, what="a third session")
        assert relay.poll() is None, process_log(relay)[-3000:]
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(timeout=30) == 0

    log = process_log(relay)
    assert log.count("database connection lost") >= 2, log[-3000:]
    duplicates = assert_complete_and_in_order(topic, 22_000, keys=40)
    print(f"{duplicates} duplicates after two cuts")


@pytest.mark.django_db(transaction=True)
def test_leadership_moves_safely_when_relays_lose_the_database_repeatedly(
    kafka_topics, subprocess_env
) -> None:
    topic = make_topic(new_topic_name(kafka_topics.topic_prefix, "cut2"))
    insert_outbox_rows(20_000, topic=topic, keys=40)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        with ExitStack() as cleanup:
            # One stall per round, each further on: every cut lands on a leader
            # mid-drain, and the next round waits for the next leader to get there.
            rounds = []
            for at in (4_000, 9_000, 14_000):
                stall = cleanup.enter_context(ExitStack())
                rounds.append(
                    (at, stall, stall.enter_context(recording_blocked(topic, at=at)))
                )
            relays = [
                start_relay_process(
                    subprocess_env, "--batch-size", "100", "--poll-interval", "0.2"
                )
                for _ in range(2)
            ]
            for at, stall, lock in rounds:
                wait_until(lock.holds_back_a_relay, timeout=60, what=f"a stall at {at}")
                assert unsent(topic) >= 20_000 - at
                assert terminate_relay_connections() >= 1
                stall.close()  # the next leader's drain goes on, up to the next stall
        wait_until(lambda: unsent(topic) == 0, timeout=120, what="all sent")
        assert all(r.poll() is None for r in relays)
    finally:
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        for relay in relays:
            assert relay.wait(timeout=30) == 0

    assert_complete_and_in_order(topic, 20_000, keys=40)


def test_reconnect_delays_double_up_to_the_cap_with_jitter() -> None:
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (5_000, 10.0)]:
        delays = [reconnect_delay(failures, cap=10.0) for _ in range(200)]
        assert all(0.25 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # it does grow to the ceiling
        assert max(delays) - min(delays) > 0.01  # jittered, not all the same
