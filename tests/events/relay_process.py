"""Running the relay: in a thread for most tests, as a real process for crash tests;
and holding a relay at a known point of its drain."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection

from events.relay.outbox_relay import OutboxRelay

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_relay(
    relay: OutboxRelay | None = None, **options: Any
) -> Iterator[OutboxRelay]:
    """Run `relay` (or a new one built with `options`) in a thread for the block."""
    relay = relay or OutboxRelay(**options)
    thread = threading.Thread(target=relay.run, name="relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "relay did not stop"


def start_relay_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    from tests.events.pipeline import start_manage_process

    return start_manage_process(env, "relay_outbox", *args)


class RowLock:
    """A lock on one outbox row, held by a connection of the test's own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def holds_back_a_relay(self) -> bool:
        """Whether a relay connection of this database waits for this lock."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                " 'relay_outbox' AND datname = current_database()"
                " AND %s = ANY(pg_blocking_pids(pid))",
                [self.pid],
            )
            return bool(cursor.fetchone()[0])


@contextmanager
def recording_blocked(topic: str, *, at: int) -> Iterator[RowLock]:
    """Lock the pending row of `topic` at offset `at` (in id order) for the block.

    A relay reads past the lock but cannot delete the row: its recorder waits on
    the batch that holds it, and the relay stalls mid-drain with the batches after it
    produced (and acknowledged) but not recorded, and every row from that batch on
    still in the outbox. `RowLock.holds_back_a_relay()` says when a relay got there.
    """
    s = connection.settings_dict
    with psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        application_name="test-row-lock",
    ) as conn:
        # FOR UPDATE with OFFSET would also lock the rows it skips: pick, then lock.
        locked = conn.execute(
            "SELECT id FROM events_outboxevent WHERE id = (SELECT id FROM"
            " events_outboxevent WHERE topic = %s AND parked_at IS NULL ORDER BY id"
            " OFFSET %s LIMIT 1) FOR UPDATE",
            [topic, at],
        ).fetchone()
        assert locked, f"{topic} has no pending row at offset {at}"
        try:
            yield RowLock(conn.info.backend_pid)
        finally:
            conn.rollback()
