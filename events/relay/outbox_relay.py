"""The outbox relay: committed outbox rows -> Kafka, in order, at least once.

Entry point: `OutboxRelay(...).run()`, used by `manage.py relay_outbox`. It runs
sessions (events.relay.leadership, then events.relay.pipeline) until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from events.core.conf import pipeline_settings
from events.core.kafka import Producer, build_producer
from events.observability import metrics
from events.relay.database import (
    DATABASE_CONNECTION_ERRORS,
    database_connection,
    recorder_connection,
)
from events.relay.leadership import Reconnects, wait_for_shards
from events.relay.loop_state import MAX_IN_FLIGHT, LoopState
from events.relay.pipeline import Pipeline
from events.relay.reader import Reader
from events.relay.recorder import Recorder
from events.relay.sending import BatchSender
from events.relay.shards import ShardClaims

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")


class OutboxRelay:
    """Send committed outbox rows to Kafka in id order; delete them once acknowledged.

    Contract:
    - `run()` blocks until `stop()` is called; batches in flight are finished first
      (acknowledged rows recorded), so a clean stop re-sends nothing.
    - One leader per shard: the outbox is divided into OUTBOX_RELAY_SHARDS shards by
      a hash of the key (events.relay.shards; one by default). `run()` claims a fair
      share of them with PostgreSQL session advisory locks and stands by for the
      rest; a relay that holds none waits as a hot standby. A dead leader's shards are
      taken over within one poll interval, because PostgreSQL frees the locks when
      its session ends. With one sender per key and per-key commit order equal to id
      order (see events.core.outbox.publish), every key's events reach their
      partition in commit order, also across a crash or a shard's move.
    - At least once: a row leaves the outbox only after the broker acknowledged it
      (acks=all, idempotent producer). A crash between acknowledgement and recording
      re-sends the row: a duplicate, never a loss.
    - Read by commit: each read takes the rows committed after the previous window's
      snapshot (events.relay.window.FETCH_SQL), in id order, so a row whose transaction
      was open at one read comes in the next, before any later event of its key.
    - Pipelined (events.relay.pipeline): up to MAX_IN_FLIGHT batches are produced
      ahead of their recording, which a Recorder thread does on its own connection,
      and after a full batch the next one is read in a thread while this one is
      produced. Whenever the pipeline is empty (at least every poll interval) it reads
      everything pending again, which picks up rows whose delivery failed. It sleeps
      only after such a read found nothing (events.relay.loop_state).
    - A row the broker refuses for good (PERMANENT_PRODUCE_ERRORS, e.g. too large) is
      parked with its error and the rows behind it go on. Any other failure leaves the
      rows pending; the relay backs off (doubling, capped) and sends them again.
    - It wakes on NOTIFY from the outbox insert trigger and polls every
      `poll_interval` seconds as well, so a missed notification costs one interval.
    - A lost database connection ends the session (and leadership); the relay
      connects again after a backoff with jitter and competes from the start.
    """

    # The parts a session is built from; a test may put in its own.
    reader_type: type[Reader] = Reader
    sender_type: type[BatchSender] = BatchSender

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        shard_count: int | None = None,
        producer_factory: Callable[[], Producer] = build_producer,
        # Short: while the broker is away librdkafka keeps trying by itself; this only
        # spaces out the relay's re-reads, and a long one is slept after it is back.
        max_backoff: float = 2.0,
    ) -> None:
        conf = pipeline_settings()
        self.batch_size = batch_size or conf.relay_batch_size
        self.poll_interval = poll_interval or conf.relay_poll_interval
        self.shard_count = shard_count or conf.relay_shards
        self.max_backoff = max_backoff
        self._sender = self.sender_type(producer_factory)
        self._stop = threading.Event()
        self.is_leader = False

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
        reconnects = Reconnects(cap=self.max_backoff)
        while not self.stopping:
            started = time.monotonic()
            try:
                self._run_session()
                return
            except DATABASE_CONNECTION_ERRORS as exc:
                delay = reconnects.delay_after(time.monotonic() - started)
                metrics.RELAY_RECONNECTS.inc()
                logger.warning(
                    "database connection lost (%s: %s); leadership given up, "
                    "connecting again in %.1f s",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    delay,
                )
                self._sender.abandon()
                self._stop.wait(delay)

    def _run_session(self) -> None:
        conn = database_connection()
        try:
            claims = ShardClaims(conn, self.shard_count)
            claims.join()
            # Each pipeline sends the shards held when it starts; when they change
            # (a relay joined or died) it ends, everything in flight recorded, and
            # the next one starts from the new set.
            while wait_for_shards(
                claims, poll_interval=self.poll_interval, stop=self._stop
            ):
                self.is_leader = True
                self._lead(conn, claims)
        finally:
            conn.close()
            self.is_leader = False
            metrics.RELAY_IS_LEADER.set(0)
            metrics.RELAY_SHARDS_LED.set(0)

    def _lead(self, conn: psycopg.Connection[Any], claims: ShardClaims) -> None:
        reader = self.reader_type(
            conn, batch_size=self.batch_size, shards=claims.filter()
        )
        reader.listen()
        self._sender.producer()
        pipeline = Pipeline(
            reader=reader,
            sender=self._sender,
            recorder=Recorder(
                recorder_connection,
                depth=MAX_IN_FLIGHT,
                delivery_log=pipeline_settings().relay_delivery_log,
            ),
            state=LoopState(
                batch_size=self.batch_size,
                poll_interval=self.poll_interval,
                max_backoff=self.max_backoff,
                now=time.monotonic(),
            ),
            stop=self._stop,
            reassess=claims.reassess,
        )
        try:
            pipeline.run()
        finally:
            pipeline.close()
