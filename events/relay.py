"""The outbox relay: committed outbox rows -> Kafka, in order, at least once.

Entry point: `OutboxRelay(...).run()`, used by `manage.py relay_outbox`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import connections

from events import metrics
from events.conf import pipeline_settings
from events.kafka import (
    PERMANENT_PRODUCE_ERRORS,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    build_producer,
)

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "events_outbox"
# Session advisory lock that makes one relay the leader; the others wait as hot standbys.
RELAY_LOCK_KEY = (7_002, 0)
BACKLOG_REFRESH_SECONDS = 5.0

FETCH_SQL = """
    SELECT id, topic, key, payload::text, headers::text
    FROM events_outboxevent
    WHERE sent_at IS NULL AND parked_at IS NULL
    ORDER BY id
    LIMIT %s
"""
MARK_SENT_SQL = """
    UPDATE events_outboxevent AS o
    SET sent_at = now(), partition = v.p, "offset" = v.o, last_error = ''
    FROM unnest(%s::bigint[], %s::int[], %s::bigint[]) AS v(id, p, o)
    WHERE o.id = v.id
"""
PARK_SQL = """
    UPDATE events_outboxevent AS o
    SET parked_at = now(), last_error = v.err
    FROM unnest(%s::bigint[], %s::text[]) AS v(id, err)
    WHERE o.id = v.id
"""
NOTE_ERROR_SQL = """
    UPDATE events_outboxevent AS o SET last_error = v.err
    FROM unnest(%s::bigint[], %s::text[]) AS v(id, err)
    WHERE o.id = v.id
"""
BACKLOG_SQL = """
    SELECT count(*), extract(epoch FROM now() - min(created_at))
    FROM events_outboxevent WHERE sent_at IS NULL AND parked_at IS NULL
"""
PARKED_SQL = "SELECT count(*) FROM events_outboxevent WHERE parked_at IS NOT NULL"


@dataclass
class BatchResult:
    fetched: int = 0
    sent: int = 0
    parked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


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
    )


class OutboxRelay:
    """Send committed outbox rows to Kafka in id order; mark only acknowledged rows sent.

    Contract:
    - `run()` blocks until `stop()` is called; the batch in flight is finished first
      (acknowledged rows marked) so a clean stop re-sends nothing.
    - One leader: `run()` first takes a PostgreSQL session advisory lock. A second
      relay waits as a hot standby and takes over within one poll interval of the
      leader's death, because PostgreSQL frees the lock when the session ends. With one
      sender and per-key commit order in id order (see events.outbox.publish), every
      key's events reach their partition in commit order, also across a crash.
    - At least once: a row is marked sent only after the broker acknowledged it with
      acks=all from an idempotent producer. A crash between acknowledgement and marking
      re-sends the row: a duplicate, never a loss.
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
        max_backoff: float = 10.0,
    ) -> None:
        conf = pipeline_settings()
        self.batch_size = batch_size or conf.relay_batch_size
        self.poll_interval = poll_interval or conf.relay_poll_interval
        self.max_backoff = max_backoff
        self._producer_factory = producer_factory
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._next_backlog_refresh = 0.0
        self.is_leader = False

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to return after the batch in flight (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self._conn = database_connection()
        try:
            if not self._become_leader():
                return
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._producer = self._producer_factory()
            self._loop()
        finally:
            self._close()

    def _close(self) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(10)
            if remaining:
                logger.warning(
                    "relay stopped with %d messages unacknowledged", remaining
                )
        if self._conn is not None:
            self._conn.close()
        self.is_leader = False
        metrics.RELAY_IS_LEADER.set(0)

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
            if not announced:
                logger.info("another relay is the leader; waiting as a hot standby")
                announced = True
            self._stop.wait(self.poll_interval)
        return False

    def _loop(self) -> None:
        backoff = 0.0
        while not self.stopping:
            result = self.relay_batch()
            self._refresh_backlog()
            if result.failed:
                backoff = min(max(backoff * 2, 0.5), self.max_backoff)
                logger.warning(
                    "broker did not acknowledge %d of %d events (%s); retrying in %.1f s",
                    result.failed,
                    result.fetched,
                    "; ".join(sorted(set(result.errors))[:3]),
                    backoff,
                )
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            if result.fetched < self.batch_size:
                self._wait_for_notify()

    def _wait_for_notify(self) -> None:
        assert self._conn is not None
        # Drain what piled up while we were busy, then sleep until the next one.
        for _ in self._conn.notifies(timeout=0):
            pass
        deadline = time.monotonic() + self.poll_interval
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices keep a SIGTERM from waiting a whole poll interval.
            for _ in self._conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return

    # -- one batch --------------------------------------------------------------------

    def relay_batch(self) -> BatchResult:
        """Send one batch of pending rows and record the outcome of each."""
        assert self._conn is not None
        producer = self._producer or self._producer_factory()
        self._producer = producer
        started = time.perf_counter()
        rows = self._conn.execute(FETCH_SQL, (self.batch_size,)).fetchall()
        result = BatchResult(fetched=len(rows))
        if not rows:
            return result
        outcomes: dict[int, tuple[KafkaError | None, int, int]] = {}
        on_delivery = functools.partial(_record_delivery, outcomes)
        for row_id, topic, key, payload, headers in rows:
            self._produce(
                producer, outcomes, on_delivery, row_id, topic, key, payload, headers
            )
        self._wait_for_acks(producer, lambda: len(outcomes) == len(rows))
        self._isolate_refused(producer, rows, outcomes, on_delivery)
        self._record(rows, outcomes, result)
        metrics.OUTBOX_BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    def _produce(
        self,
        producer: Producer,
        outcomes: dict[int, tuple[KafkaError | None, int, int]],
        on_delivery: Callable[..., None],
        row_id: int,
        topic: str,
        key: str,
        payload: str,
        headers: str,
    ) -> None:
        header_list = [(k, str(v).encode()) for k, v in json.loads(headers).items()]
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

    def _isolate_refused(
        self,
        producer: Producer,
        rows: list[tuple[Any, ...]],
        outcomes: dict[int, tuple[KafkaError | None, int, int]],
        on_delivery: Callable[..., None],
    ) -> None:
        """Send each refused row again on its own, so only the real culprit is parked.

        The broker refuses a whole record batch when one record in it is too large, and
        librdkafka does not split batches the way the Java producer does: every row of
        that batch comes back MSG_SIZE_TOO_LARGE. Sent alone, the innocent ones succeed.
        """
        refused = [
            row
            for row in rows
            if (error := outcomes[row[0]][0]) is not None
            and error.code() in PERMANENT_PRODUCE_ERRORS
        ]
        if not refused:
            return
        for row in refused:
            del outcomes[row[0]]
        for row in refused:
            self._produce(producer, outcomes, on_delivery, *row)
            self._wait_for_acks(producer, lambda row_id=row[0]: row_id in outcomes)

    def _wait_for_acks(self, producer: Producer, done: Callable[[], bool]) -> None:
        # librdkafka keeps retrying while the broker is away and fails each message
        # after delivery.timeout.ms, so this loop ends; meanwhile say what we wait for.
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

    def _record(
        self,
        rows: list[tuple[Any, ...]],
        outcomes: dict[int, tuple[KafkaError | None, int, int]],
        result: BatchResult,
    ) -> None:
        assert self._conn is not None
        sent_ids: list[int] = []
        partitions: list[int] = []
        offsets: list[int] = []
        parked: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        topics: dict[int, str] = {}
        for row_id, topic, *_ in rows:
            topics[row_id] = topic
            error, partition, offset = outcomes[row_id]
            if error is None:
                sent_ids.append(row_id)
                partitions.append(partition)
                offsets.append(offset)
            elif error.code() in PERMANENT_PRODUCE_ERRORS:
                parked.append((row_id, f"{error.name()}: {error.str()}"))
            else:
                failed.append((row_id, f"{error.name()}: {error.str()}"))
                if error.fatal():
                    # An idempotent producer in a fatal state refuses everything after:
                    # start a new one (new producer id) for the next batch.
                    logger.error("producer fatal error %s; recreating it", error.str())
                    self._producer = None
        with self._conn.transaction():
            if sent_ids:
                self._conn.execute(MARK_SENT_SQL, (sent_ids, partitions, offsets))
            if parked:
                ids, errors = zip(*parked, strict=False)
                self._conn.execute(PARK_SQL, (list(ids), list(errors)))
            if failed:
                ids, errors = zip(*failed, strict=False)
                self._conn.execute(NOTE_ERROR_SQL, (list(ids), list(errors)))
        by_topic: dict[str, int] = {}
        for row_id in sent_ids:
            by_topic[topics[row_id]] = by_topic.get(topics[row_id], 0) + 1
        for topic, count in by_topic.items():
            metrics.OUTBOX_PUBLISHED.labels(topic=topic).inc(count)
        for row_id, error in parked:
            metrics.OUTBOX_PARKED.labels(topic=topics[row_id]).inc()
            logger.error("parked outbox row %d for good: %s", row_id, error)
        if failed:
            metrics.OUTBOX_SEND_ERRORS.inc(len(failed))
        result.sent = len(sent_ids)
        result.parked = len(parked)
        result.failed = len(failed)
        result.errors = [error for _, error in failed]

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


def _record_delivery(
    outcomes: dict[int, tuple[KafkaError | None, int, int]],
    row_id: int,
    error: KafkaError | None,
    message: Message,
) -> None:
    if error is not None:
        outcomes[row_id] = (error, -1, -1)
    else:
        outcomes[row_id] = (None, message.partition(), message.offset())
