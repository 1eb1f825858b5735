"""Recording what the broker said about a batch: delete + log the sent, park the refused.

It runs in a thread with a database connection of its own, so the database work for
batch N overlaps fetching and producing batch N+1 in the relay's main thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from events.core.kafka import PERMANENT_PRODUCE_ERRORS, KafkaError
from events.observability import metrics
from events.relay.window import Row

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")

# The broker's answer for one row: (error or None, partition, offset). librdkafka types
# a message's partition and offset as optional; a delivered one has both.
Outcome = tuple[KafkaError | None, int | None, int | None]

# Delete what the broker acknowledged (no dead row versions left in the pending index, no
# rewrite of 1 KB payloads) and, with OUTBOX_DELIVERY_LOG, log where it landed.
LOG_AND_DELETE_SENT_SQL = """
    WITH sent AS (
        DELETE FROM events_outboxevent WHERE id = ANY(%(ids)s)
        RETURNING id, event_id, event_type, topic, key, aggregate_type, aggregate_id,
            created_at
    )
    INSERT INTO events_publishedevent (outbox_id, event_id, event_type, topic, key,
        aggregate_type, aggregate_id, created_at, partition, "offset", sent_at)
    SELECT s.id, s.event_id, s.event_type, s.topic, s.key, s.aggregate_type,
        s.aggregate_id, s.created_at, v.part, v.off, now()
    FROM sent AS s
    JOIN unnest(%(ids)s::bigint[], %(parts)s::int[], %(offs)s::bigint[]) AS v(id, part, off)
        ON v.id = s.id
    ON CONFLICT (event_id) DO NOTHING
"""
DELETE_SENT_SQL = "DELETE FROM events_outboxevent WHERE id = ANY(%(ids)s)"
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


@dataclass
class Batch:
    """Rows produced together, and the broker's answer for each (row id -> outcome)."""

    rows: list[Row]
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    # When production began: the batch time ends when its outcomes are committed.
    started: float = field(default_factory=time.perf_counter)

    def answered(self, row_id: int) -> bool:
        """Whether the broker has answered for row `row_id`."""
        return row_id in self.outcomes

    @property
    def complete(self) -> bool:
        """Whether the broker has answered for every row."""
        return len(self.outcomes) == len(self.rows)

    def failures(self) -> list[tuple[int, KafkaError]]:
        """The rows that failed for now (not refused for good): they are sent again."""
        return [
            (row_id, error)
            for row_id, (error, _, _) in self.outcomes.items()
            if error is not None and error.code() not in PERMANENT_PRODUCE_ERRORS
        ]


def record_batch(
    conn: psycopg.Connection[Any], batch: Batch, *, delivery_log: bool = False
) -> None:
    """Write the batch's outcomes in one transaction.

    One transaction, so a crash leaves either all of the batch's rows pending (to be
    sent again) or none.
    """
    sent_ids: list[int] = []
    partitions: list[int | None] = []
    offsets: list[int | None] = []
    parked: list[tuple[int, str]] = []
    failed: list[tuple[int, str]] = []
    topics: dict[int, str] = {}
    for row_id, topic, *_ in batch.rows:
        topics[row_id] = topic
        error, partition, offset = batch.outcomes[row_id]
        if error is None:
            sent_ids.append(row_id)
            partitions.append(partition)
            offsets.append(offset)
        elif error.code() in PERMANENT_PRODUCE_ERRORS:
            parked.append((row_id, f"{error.name()}: {error.str()}"))
        else:
            failed.append((row_id, f"{error.name()}: {error.str()}"))
    with conn.transaction():
        if sent_ids and delivery_log:
            conn.execute(
                LOG_AND_DELETE_SENT_SQL,
                {"ids": sent_ids, "parts": partitions, "offs": offsets},
            )
        elif sent_ids:
            conn.execute(DELETE_SENT_SQL, {"ids": sent_ids})
        if parked:
            ids, errors = zip(*parked, strict=True)
            conn.execute(PARK_SQL, (list(ids), list(errors)))
        if failed:
            ids, errors = zip(*failed, strict=True)
            conn.execute(NOTE_ERROR_SQL, (list(ids), list(errors)))
    metrics.OUTBOX_BATCH_SECONDS.observe(time.perf_counter() - batch.started)
    by_topic: dict[str, int] = {}
    for row_id in sent_ids:
        by_topic[topics[row_id]] = by_topic.get(topics[row_id], 0) + 1
    for topic, count in by_topic.items():
        metrics.OUTBOX_PUBLISHED.labels(topic=topic).inc(count)
    for row_id, reason in parked:
        metrics.OUTBOX_PARKED.labels(topic=topics[row_id]).inc()
        logger.error("parked outbox row %d for good: %s", row_id, reason)
    if failed:
        metrics.OUTBOX_SEND_ERRORS.inc(len(failed))


class Recorder:
    """A thread that records batches in the order they are submitted.

    `drain()` returns once everything submitted is committed (or failed: then
    `error` is set and the rows stay in the outbox, to be sent again).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        depth: int,
        *,
        delivery_log: bool = False,
    ) -> None:
        self._connect = connect
        self._delivery_log = delivery_log
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(
            target=self._run, name="relay-recorder", daemon=True
        )
        self.error: BaseException | None = None
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        """Queue `batch`; block while `depth` batches wait, which paces the producer."""
        self._queue.put(batch)

    def drain(self) -> None:
        """Return once everything submitted is recorded or has failed."""
        self._queue.join()

    def take_error(self) -> BaseException | None:
        """The latest recording failure since the last call, if any (then cleared)."""
        error, self.error = self.error, None
        return error

    def close(self) -> None:
        """Record what is queued, then end the thread and its connection."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if conn is None or conn.closed:
                    conn = self._connect()
                record_batch(conn, batch, delivery_log=self._delivery_log)
            except Exception as exc:  # noqa: BLE001 - reported to the relay loop
                logger.exception(
                    "recording a batch failed; its rows will be sent again"
                )
                self.error = exc
                if conn is not None:
                    conn.close()
                    conn = None
            finally:
                self._queue.task_done()
                if batch is None and conn is not None:
                    conn.close()
