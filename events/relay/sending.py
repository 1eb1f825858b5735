"""Producing batches of outbox rows, and what the broker answers about each row.

`BatchSender` owns the relay's producer (one per session, replaced after a fatal
error); `produce_row` is the per-row hot path, shared with bench.naive_relay so both
relays send the same bytes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import orjson

from events.core import headers as h
from events.core.kafka import (
    PERMANENT_PRODUCE_ERRORS,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from events.observability import audit
from events.relay.recorder import Batch, Outcome
from events.relay.window import Row

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")

DeliveryCallback = Callable[[int, KafkaError | None, Message], None]


def record_delivery(
    outcomes: dict[int, Outcome],
    row_id: int,
    error: KafkaError | None,
    message: Message,
) -> None:
    """Note the broker's answer for one row (librdkafka's delivery callback)."""
    if error is not None:
        outcomes[row_id] = (error, -1, -1)
    else:
        outcomes[row_id] = (None, message.partition(), message.offset())


def produce_row(
    producer: Producer,
    outcomes: dict[int, Outcome],
    on_delivery: DeliveryCallback,
    row_id: int,
    topic: str,
    key: str,
    payload: str,
    headers: str,
) -> None:
    """Hand one row to the producer; its outcome arrives through `on_delivery`.

    A row refused before it leaves the process gets its outcome at once.
    """
    # orjson and a plain list: this runs once per row, the relay's hottest line.
    header_list: list[tuple[str, str | bytes | None]] = [
        (k, str(v).encode()) for k, v in orjson.loads(headers).items()
    ]
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


class BatchSender:
    """Produce batches of rows and wait for the broker's answers.

    Contract: `produce_batch` does not block (except while librdkafka's queue is
    full); a batch is `complete` once every row has an outcome, which librdkafka
    guarantees within delivery.timeout.ms. The producer is idempotent, so the rows of
    one key keep their order within a session; `abandon()` ends a session's producer
    so the next session starts with a new producer id and none of the old retries.
    """

    def __init__(self, producer_factory: Callable[[], Producer]) -> None:
        self._producer_factory = producer_factory
        self._producer: Producer | None = None

    @property
    def has_producer(self) -> bool:
        return self._producer is not None

    def producer(self) -> Producer:
        """The current producer, created if there is none."""
        if self._producer is None:
            self._producer = self._producer_factory()
        return self._producer

    def produce_batch(self, producer: Producer, rows: list[Row]) -> Batch:
        """Produce `rows` in order; the batch fills in as the broker answers."""
        batch = Batch(rows=rows)
        on_delivery = functools.partial(record_delivery, batch.outcomes)
        for row in rows:
            produce_row(producer, batch.outcomes, on_delivery, *row)
        return batch

    def isolate_refused(self, batch: Batch) -> None:
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
        producer = self.producer()
        on_delivery = functools.partial(record_delivery, batch.outcomes)
        for row in refused:
            del batch.outcomes[row[0]]
        for row in refused:
            produce_row(producer, batch.outcomes, on_delivery, *row)
            self.wait_for(functools.partial(batch.answered, row[0]))

    def drop_if_fatal(self, failures: list[tuple[int, KafkaError]]) -> None:
        """Replace the producer if one of `failures` left it in a fatal state.

        An idempotent producer in a fatal state refuses everything after: a new one
        (new producer id) takes over for the next batch.
        """
        for _row_id, error in failures:
            if error.fatal():
                logger.error("producer fatal error %s; recreating it", error.str())
                self._producer = None

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Serve delivery callbacks until `done()`.

        librdkafka keeps retrying while the broker is away and fails each message
        after delivery.timeout.ms, so this ends; meanwhile it says what it waits for.
        """
        producer = self.producer()
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

    def abandon(self) -> None:
        """Drop the producer after a lost session, so the next one starts clean."""
        if self._producer is None:
            return
        self._producer.purge(in_queue=True, in_flight=False)
        self._producer.flush(5.0)
        self._producer = None


def audit_published(batch: Batch) -> None:
    """Write the audit line of each row of `batch` the broker acknowledged."""
    for row_id, topic, _key, _payload, headers in batch.rows:
        error, partition, offset = batch.outcomes[row_id]
        if error is None:
            meta = orjson.loads(headers)
            audit.audit(
                audit.PUBLISHED,
                event_id=meta.get(h.EVENT_ID),
                event_type=meta.get(h.EVENT_TYPE),
                topic=topic,
                partition=-1 if partition is None else partition,
                offset=-1 if offset is None else offset,
                trace_id=meta.get(h.TRACE_ID),
            )
