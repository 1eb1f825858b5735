"""The outbox relay: committed outbox rows -> Kafka, in order, at least once.

Entry point: `OutboxRelay(...).run()`, used by `manage.py relay_outbox`.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from django.db import connections

from events.core import headers as h
from events.core.conf import pipeline_settings
from events.core.kafka import (
    PERMANENT_PRODUCE_ERRORS,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    build_producer,
)
from events.observability import audit, metrics
from events.relay.recorder import Batch, Outcome, Recorder

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "events_outbox"
# Session advisory lock that makes one relay the leader; the others wait as hot standbys.
RELAY_LOCK_KEY = (7_002, 0)
BACKLOG_REFRESH_SECONDS = 5.0

# Rows are read in windows of commit time, not by a running id: a window holds the rows
# whose transactions committed after the `lower` snapshot and up to its `upper` one,
# paged in id order. Walking by id alone skipped a row whose transaction was still open
# (id 10) once a later id of another key was read (11); after 10 committed, the same
# key's next event (12) could be read, and sent, before 10. In windows, 10 and 12 both
# committed after the last window, so they come in the same one, in id order, and the
# per-key lock in events.publish makes id order commit order for a key.
# The statement's own snapshot comes back with the rows (a LEFT JOIN, so also when there
# are none); it becomes the window's upper bound.
FETCH_SQL = """
    SELECT s.snap::text, o.id, o.topic, o.key, o.payload, o.headers::text
    FROM (SELECT pg_current_snapshot() AS snap) AS s
    LEFT JOIN LATERAL (
        SELECT id, topic, key, payload, headers
        FROM events_outboxevent
        WHERE parked_at IS NULL AND id > %(after)s
            AND NOT pg_visible_in_snapshot(xact_id, %(lower)s::pg_snapshot)
            AND (%(upper)s::pg_snapshot IS NULL
                 OR pg_visible_in_snapshot(xact_id, %(upper)s::pg_snapshot))
        ORDER BY id
        LIMIT %(limit)s
    ) AS o ON true
"""
# A snapshot in which nothing is visible: a window from it holds every pending row.
EVERYTHING = "1:1:"
BACKLOG_SQL = """
    SELECT count(*), extract(epoch FROM now() - min(created_at))
    FROM events_outboxevent WHERE parked_at IS NULL
"""
PARKED_SQL = "SELECT count(*) FROM events_outboxevent WHERE parked_at IS NOT NULL"
# Batches produced but not yet recorded: enough to overlap the database with Kafka.
MAX_IN_FLIGHT = 3


# A relay's connection to PostgreSQL broke (a restart, a network cut, an admin
# terminating it), or a statement was cancelled or timed out (QueryCanceled and
# LockNotAvailable are OperationalErrors too): either way the session ends and a new
# one starts.
DATABASE_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


HEALTHY_SESSION_SECONDS = 30.0


def reconnect_delay(failures: int, *, cap: float, base: float = 0.5) -> float:
    """Seconds to wait before connecting again: doubling, capped, with full jitter,
    so relays that lost the database together do not all come back at once."""
    # The exponent is bounded: after a day without a database, 2 ** failures would
    # overflow a float.
    return random.uniform(base / 2, min(cap, base * 2 ** min(failures - 1, 16)))


@dataclass(frozen=True)
class Window:
    """Where the relay reads next: rows committed after `lower`, up to `upper`, past
    id `after`. `upper` is None until the window's first read sets it."""

    lower: str = EVERYTHING
    upper: str | None = None
    after: int = 0

    @property
    def from_the_start(self) -> bool:
        return self.lower == EVERYTHING and self.after == 0

    def next(self, rows: list[tuple[Any, ...]], snapshot: str, full: bool) -> Window:
        upper = self.upper or snapshot
        if full:  # more of this window may be waiting: page on by id
            return Window(self.lower, upper, rows[-1][0])
        return Window(lower=upper)  # this window is done; the next starts after it


def database_connection() -> psycopg.Connection[Any]:
    """Open a connection of our own to the default database, in autocommit mode.

    The relay needs one connection for its whole life: the leader lock is a session
    lock, so losing the connection must mean losing leadership, never a silent reconnect.
    """
    s = connections["default"].settings_dict
    return psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
        application_name="relay_outbox",
        # A database that stops answering (a dropped network, not a restart) must end
        # the session too, not hang it: fail a connect after 10 s, and notice a dead
        # peer within about half a minute (keepalives, and unacknowledged writes).
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
    )


def recorder_connection() -> psycopg.Connection[Any]:
    """A connection whose commits do not wait for the WAL flush.

    Safe for this bookkeeping only: if PostgreSQL crashes, the last deletes may be
    lost and those rows are sent again (a duplicate, allowed by at-least-once). The
    events themselves were committed by the application with a full flush.
    """
    conn = database_connection()
    conn.execute("SET synchronous_commit TO off")
    return conn


class OutboxRelay:
    """Send committed outbox rows to Kafka in id order; delete them once acknowledged.

    Contract:
    - `run()` blocks until `stop()` is called; batches in flight are finished first
      (acknowledged rows recorded), so a clean stop re-sends nothing.
    - One leader: `run()` first takes a PostgreSQL session advisory lock. A second
      relay waits as a hot standby and takes over within one poll interval of the
      leader's death, because PostgreSQL frees the lock when the session ends. With one
      sender and per-key commit order equal to id order (see events.core.outbox.publish),
      every key's events reach their partition in commit order, also across a crash.
    - At least once: a row leaves the outbox only after the broker acknowledged it
      (acks=all, idempotent producer). A crash between acknowledgement and recording
      re-sends the row: a duplicate, never a loss.
    - Read by commit: each read takes the rows committed after the previous window's
      snapshot (see FETCH_SQL), in id order, so a row whose transaction was open at one
      read comes in the next, before any later event of its key.
    - Pipelined: up to MAX_IN_FLIGHT batches are produced ahead of their recording,
      which a Recorder thread does on its own connection, and after a full batch the
      next one is read in a thread while this one is produced. Whenever the pipeline
      is empty (at least every poll interval) it reads everything pending again, which
      picks up rows whose delivery failed. It sleeps only after such a read found
      nothing.
    - A row the broker refuses for good (PERMANENT_PRODUCE_ERRORS, e.g. too large) is
      parked with its error and the rows behind it go on. Any other failure leaves the
      rows pending; the relay backs off (doubling, capped) and sends them again.
    - It wakes on NOTIFY from the outbox insert trigger and polls every
      `poll_interval` seconds as well, so a missed notification costs one interval.
    """

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        producer_factory: Callable[[], Producer] = build_producer,
        # Short: while the broker is away librdkafka keeps trying by itself; this only
        # spaces out the relay's re-reads, and a long one is slept after it is back.
        max_backoff: float = 2.0,
    ) -> None:
        conf = pipeline_settings()
        self.batch_size = batch_size or conf.relay_batch_size
        self.poll_interval = poll_interval or conf.relay_poll_interval
        self.max_backoff = max_backoff
        self._producer_factory = producer_factory
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._recorder: Recorder | None = None
        self._in_flight: deque[Batch] = deque()
        # The next batch, read while the current one is produced: (window, future).
        self._prefetch: tuple[Window, Future[tuple[list[Any], str]]] | None = None
        self._fetcher: ThreadPoolExecutor | None = None
        self._next_backlog_refresh = 0.0
        self.is_leader = False

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to return after the batches in flight (signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Lead (or stand by) until stopped, through lost database connections.

        A lost connection also lost the leader lock (a session lock), and a standby
        may have taken it: the session ends, the batches in flight are finished (their
        rows are deleted only if the recorder's own connection still works; otherwise
        they stay in the outbox, to be sent again), the producer is dropped, and after
        a backoff with jitter the relay connects again and competes for leadership
        from the start.

        While the old session finishes its batches a new leader may already send: the
        old deliveries can land after the new leader's first ones. That reorders no
        key's first arrivals: every row the old relay had not recorded is still in the
        outbox, so the new leader sends it again before anything later of its key, and
        the consumers' inbox absorbs the copies.
        """
        failures = 0
        while not self.stopping:
            started = time.monotonic()
            try:
                self._run_session()
                return
            except DATABASE_CONNECTION_ERRORS as exc:
                # A session that ran a while starts the backoff over.
                healthy = time.monotonic() - started > HEALTHY_SESSION_SECONDS
                failures = 1 if healthy else failures + 1
                delay = reconnect_delay(failures, cap=self.max_backoff)
                metrics.RELAY_RECONNECTS.inc()
                logger.warning(
                    "database connection lost (%s: %s); leadership given up, "
                    "connecting again in %.1f s",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    delay,
                )
                self._abandon_producer()
                self._stop.wait(delay)

    def _run_session(self) -> None:
        self._conn = database_connection()
        try:
            if not self._become_leader():
                return
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._producer = self._producer_factory()
            self._recorder = Recorder(
                recorder_connection,
                depth=MAX_IN_FLIGHT,
                delivery_log=pipeline_settings().relay_delivery_log,
            )
            self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="relay-fetch")
            self._loop()
        finally:
            self._close()

    def _close(self) -> None:
        self._discard_prefetch()
        if self._fetcher is not None:
            self._fetcher.shutdown(wait=True)
            self._fetcher = None
        if self._producer is not None and self._in_flight:
            self._wait_for(lambda: all(b.complete for b in self._in_flight))
            self._hand_over_completed()
        if self._recorder is not None:
            self._recorder.drain()
            self._recorder.close()
            self._recorder = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._in_flight.clear()
        self.is_leader = False
        metrics.RELAY_IS_LEADER.set(0)

    def _abandon_producer(self) -> None:
        """Drop the producer after a lost session, so the next one starts clean (a new
        producer id; no retries of the old session's messages)."""
        if self._producer is None:
            return
        self._producer.purge(in_queue=True, in_flight=False)
        self._producer.flush(5.0)
        self._producer = None

    def _become_leader(self) -> bool:
        assert self._conn is not None
        announced = False
        while not self.stopping:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", RELAY_LOCK_KEY
            ).fetchone()
            if row and row[0]:
                self.is_leader = True
                metrics.RELAY_IS_LEADER.set(1)
                logger.info("relay is the leader; sending outbox rows")
                return True
            metrics.RELAY_HEARTBEAT.set_to_current_time()
            if not announced:
                logger.info("another relay is the leader; waiting as a hot standby")
                announced = True
            self._stop.wait(self.poll_interval)
        return False

    # -- the pipeline -----------------------------------------------------------------

    def _loop(self) -> None:
        assert self._conn is not None and self._recorder is not None
        window = read = Window()
        # After a read that came back short, read again only when something commits:
        # a read from an early snapshot walks the pending index from its start.
        caught_up = False
        rescan_at = time.monotonic() + self.poll_interval
        backoff = 0.0
        while not self.stopping:
            metrics.RELAY_HEARTBEAT.set_to_current_time()
            producer = self._ensure_producer()
            producer.poll(0)
            failures = self._hand_over_completed()
            if failures:
                self._discard_prefetch()
                backoff = self._back_off(failures, backoff)
                window, rescan_at = Window(), time.monotonic() + self.poll_interval
                caught_up = False
                continue
            fetched = -1
            if (
                len(self._in_flight) < MAX_IN_FLIGHT
                and time.monotonic() < rescan_at
                and (not caught_up or self._notified())
            ):
                read = window
                rows, snapshot = self._fetch(window)
                fetched = len(rows)
                full = fetched == self.batch_size
                caught_up = not full
                window = window.next(rows, snapshot, full)
                if full:
                    # More is likely waiting: let the database read the next batch
                    # while this one is produced.
                    self._start_prefetch(window)
                if rows:
                    self._in_flight.append(self._produce_batch(producer, rows))
                if full:
                    continue
            if self._in_flight:
                producer.poll(0.005)
                continue
            # Pipeline empty: everything read is recorded. Read everything pending
            # again, so rows whose delivery failed or that were un-parked are picked up.
            self._discard_prefetch()
            self._recorder.drain()
            if self._recorder.error is not None:
                self._recorder.error = None
                backoff = self._back_off([], backoff)
            else:
                backoff = 0.0
            self._refresh_backlog()
            # Sleep only when a read of everything pending found nothing; a commit after
            # that read's snapshot notifies after the drain that preceded it, so the
            # wait returns at once.
            if fetched == 0 and read.from_the_start:
                self._wait_for_notify()
            window, rescan_at = Window(), time.monotonic() + self.poll_interval
            caught_up = False

    def _notified(self) -> bool:
        """Whether a commit has notified since the last read (no round trip)."""
        assert self._conn is not None and self._prefetch is None
        for _ in self._conn.notifies(timeout=0, stop_after=1):
            return True
        return False

    def _fetch(self, window: Window) -> tuple[list[tuple[Any, ...]], str]:
        """Return the rows of `window` and the read's snapshot, from the prefetch if
        it read that window."""
        if self._prefetch is not None:
            prefetched, future = self._prefetch
            self._prefetch = None
            if prefetched == window:
                return future.result()
            future.exception()  # a stale read: wait for it, the connection is shared
        return self._read_batch(window)

    def _start_prefetch(self, window: Window) -> None:
        assert self._fetcher is not None
        self._prefetch = (window, self._fetcher.submit(self._read_batch, window))

    def _discard_prefetch(self) -> None:
        # Rows read ahead were not produced yet: forgetting them loses nothing, they
        # are read again from the table. Waiting frees the connection for the caller;
        # a read that failed (the connection is gone) fails the caller's next use.
        if self._prefetch is not None:
            _, future = self._prefetch
            self._prefetch = None
            future.exception()

    def _read_batch(self, window: Window) -> tuple[list[tuple[Any, ...]], str]:
        assert self._conn is not None
        self._drain_notifications()
        result = self._conn.execute(
            FETCH_SQL,
            {
                "lower": window.lower,
                "upper": window.upper,
                "after": window.after,
                "limit": self.batch_size,
            },
        ).fetchall()
        snapshot = result[0][0]
        return [row[1:] for row in result if row[1] is not None], snapshot

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._producer = self._producer_factory()
        return self._producer

    def _back_off(
        self, failures: list[tuple[int, KafkaError]], backoff: float
    ) -> float:
        # Let what is in flight finish and be recorded, then wait before trying again.
        self._wait_for(lambda: all(b.complete for b in self._in_flight))
        self._hand_over_completed()
        assert self._recorder is not None
        self._recorder.drain()
        self._recorder.error = None
        backoff = min(max(backoff * 2, 0.5), self.max_backoff)
        errors = sorted({f"{e.name()}: {e.str()}" for _, e in failures})
        logger.warning(
            "%d events not acknowledged (%s); retrying in %.1f s",
            len(failures),
            "; ".join(errors[:3]) or "database error while recording",
            backoff,
        )
        self._stop.wait(backoff)
        return backoff

    def _hand_over_completed(self) -> list[tuple[int, KafkaError]]:
        """Give finished batches, oldest first, to the recorder; return their failures."""
        assert self._recorder is not None
        failures: list[tuple[int, KafkaError]] = []
        while self._in_flight and self._in_flight[0].complete:
            batch = self._in_flight.popleft()
            self._isolate_refused(batch)
            for _row_id, error in batch.failures():
                if error.fatal():
                    # An idempotent producer in a fatal state refuses everything after:
                    # a new one (new producer id) takes over for the next batch.
                    logger.error("producer fatal error %s; recreating it", error.str())
                    self._producer = None
            failures.extend(batch.failures())
            if audit.enabled():
                _audit_published(batch)
            self._recorder.submit(batch)
        return failures

    def _produce_batch(self, producer: Producer, rows: list[tuple[Any, ...]]) -> Batch:
        batch = Batch(rows=rows)
        on_delivery = functools.partial(_record_delivery, batch.outcomes)
        for row in rows:
            self._produce(producer, batch.outcomes, on_delivery, *row)
        return batch

    def _produce(
        self,
        producer: Producer,
        outcomes: dict[int, Outcome],
        on_delivery: Callable[..., None],
        row_id: int,
        topic: str,
        key: str,
        payload: str,
        headers: str,
    ) -> None:
        # orjson: parsing the headers with json was a quarter of the per-row work here.
        header_list = [(k, str(v).encode()) for k, v in orjson.loads(headers).items()]
        while True:
            try:
                producer.produce(
                    topic,
                    value=payload.encode(),
                    key=key.encode(),
                    headers=header_list,
                    on_delivery=functools.partial(on_delivery, row_id),
                )
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                # Refused before it left the process (too large, unknown topic...).
                outcomes[row_id] = (exc.args[0], -1, -1)
                return

    def _isolate_refused(self, batch: Batch) -> None:
        """Send each refused row again on its own, so only the real culprit is parked.

        The broker refuses a whole record batch when one record in it is too large, and
        librdkafka does not split batches the way the Java producer does: every row of
        that batch comes back MSG_SIZE_TOO_LARGE. Sent alone, the innocent ones succeed.
        """
        refused = [
            row
            for row in batch.rows
            if (error := batch.outcomes[row[0]][0]) is not None
            and error.code() in PERMANENT_PRODUCE_ERRORS
        ]
        if not refused:
            return
        producer = self._ensure_producer()
        on_delivery = functools.partial(_record_delivery, batch.outcomes)
        for row in refused:
            del batch.outcomes[row[0]]
        for row in refused:
            self._produce(producer, batch.outcomes, on_delivery, *row)
            self._wait_for(lambda row_id=row[0]: row_id in batch.outcomes)

    def _wait_for(self, done: Callable[[], bool]) -> None:
        # librdkafka keeps retrying while the broker is away and fails each message
        # after delivery.timeout.ms, so this ends; meanwhile say what we wait for.
        producer = self._ensure_producer()
        waited = 0
        while not done():
            remaining = producer.flush(1.0)
            if not done():
                waited += 1
                if waited % 5 == 0:
                    logger.warning(
                        "waiting %d s for the broker to acknowledge %d events",
                        waited,
                        remaining,
                    )

    def _drain_notifications(self) -> None:
        # Called before each fetch: a notification that arrives after it stays queued,
        # so the wait that may follow an empty fetch returns at once (no lost wake-up).
        assert self._conn is not None
        for _ in self._conn.notifies(timeout=0):
            pass

    def _wait_for_notify(self) -> None:
        assert self._conn is not None
        deadline = time.monotonic() + self.poll_interval
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices keep a SIGTERM from waiting a whole poll interval.
            for _ in self._conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return

    def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now < self._next_backlog_refresh or self._conn is None:
            return
        self._next_backlog_refresh = now + BACKLOG_REFRESH_SECONDS
        count, age = self._conn.execute(BACKLOG_SQL).fetchone() or (0, None)
        metrics.OUTBOX_BACKLOG.set(count)
        metrics.OUTBOX_OLDEST_AGE.set(float(age or 0))
        (parked,) = self._conn.execute(PARKED_SQL).fetchone() or (0,)
        metrics.OUTBOX_PARKED_ROWS.set(parked)


def _audit_published(batch: Batch) -> None:
    for row_id, topic, _key, _payload, headers in batch.rows:
        error, partition, offset = batch.outcomes[row_id]
        if error is None:
            meta = orjson.loads(headers)
            audit.audit(
                audit.PUBLISHED,
                event_id=meta.get(h.EVENT_ID),
                event_type=meta.get(h.EVENT_TYPE),
                topic=topic,
                partition=partition,
                offset=offset,
                trace_id=meta.get(h.TRACE_ID),
            )


def _record_delivery(
    outcomes: dict[int, Outcome],
    row_id: int,
    error: KafkaError | None,
    message: Message,
) -> None:
    if error is not None:
        outcomes[row_id] = (error, -1, -1)
    else:
        outcomes[row_id] = (None, message.partition(), message.offset())
