"""Reading the outbox on the leader's connection: windows of rows, and NOTIFY wake-ups.

The next window can be read in a thread while the current batch is produced (one read
ahead); both share the leader's connection, which psycopg serialises.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from events.relay.shards import ShardFilter
from events.relay.window import Row, Window, fetch_sql

NOTIFY_CHANNEL = "events_outbox"

Fetched = tuple[list[Row], str]  # the rows of a window, and the read's snapshot


class Reader:
    """Read windows of pending rows; wake up on NOTIFY from the outbox insert trigger.

    Contract: every read first drains the notifications queued so far, so a commit
    after a read's snapshot leaves a notification behind and the wait that may follow
    an empty read returns at once (no lost wake-up). A read ahead that turns out stale
    is waited for and forgotten: its rows were not produced, the table still has them.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        batch_size: int,
        shards: ShardFilter | None = None,
    ) -> None:
        self._conn = conn
        self.batch_size = batch_size
        self.shards = shards or ShardFilter(1, (0,))
        self._sql = fetch_sql(self.shards)
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="relay-fetch")
        self._prefetch: tuple[Window, Future[Fetched]] | None = None

    def listen(self) -> None:
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def fetch(self, window: Window) -> Fetched:
        """The rows of `window` and the read's snapshot; from the read ahead if it
        read that window."""
        if self._prefetch is not None:
            prefetched, future = self._prefetch
            self._prefetch = None
            if prefetched == window:
                return future.result()
            future.exception()  # a stale read: wait for it, the connection is shared
        return self.read(window)

    def prefetch(self, window: Window) -> None:
        """Start reading `window` in the background, for the next `fetch`."""
        self._prefetch = (window, self._fetcher.submit(self.read, window))

    def discard_prefetch(self) -> None:
        # Waiting frees the connection for the caller; a read that failed (the
        # connection is gone) fails the caller's next use of it.
        if self._prefetch is not None:
            _, future = self._prefetch
            self._prefetch = None
            future.exception()

    def read(self, window: Window) -> Fetched:
        """One page of `window`, at most `batch_size` rows, read now."""
        self._drain_notifications()
        result = self._conn.execute(
            self._sql, window.params(self.batch_size)
        ).fetchall()
        snapshot: str = result[0][0]
        return [row[1:] for row in result if row[1] is not None], snapshot

    def notified(self) -> bool:
        """Whether a commit has notified since the last read (no round trip)."""
        assert self._prefetch is None, "the read ahead owns the connection"
        for _ in self._conn.notifies(timeout=0, stop_after=1):
            return True
        return False

    def wait_for_notify(self, timeout: float, stop: threading.Event) -> None:
        """Sleep until a commit notifies, `timeout` passes or `stop` is set."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices keep a SIGTERM from waiting a whole poll interval.
            for _ in self._conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return

    def close(self) -> None:
        self.discard_prefetch()
        self._fetcher.shutdown(wait=True)

    def _drain_notifications(self) -> None:
        for _ in self._conn.notifies(timeout=0):
            pass
