"""The dead-letter store: DLQ topics -> DeadLetter rows that operators browse and requeue.

Entry point: `DeadLetterStoreRunner(...).run()`, started by `manage.py run_consumers`
next to the handlers' consumers (see its `--dead-letters` option).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import DatabaseError, close_old_connections

from events.core.conf import PipelineSettings, pipeline_settings
from events.core.kafka import (
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
    build_consumer,
)
from events.dead_letters.rows import dead_letter_from_message
from events.models import DeadLetter

logger = logging.getLogger(__name__)


def store_group(conf: PipelineSettings | None = None) -> str:
    """The store's own consumer group: it reads every DLQ message, whoever else does."""
    conf = conf or pipeline_settings()
    return f"{conf.consumer_group}-dlq-store"


class DeadLetterStoreRunner:
    """Consume the DLQ topics of some streams and insert one DeadLetter row per message.

    Contract:
    - Blocks in `run()` until `stop()`; the batch in flight is stored and committed.
    - At least once into an idempotent table: offsets are committed (synchronously)
      only after the batch's rows are inserted; the insert is ON CONFLICT DO NOTHING on
      (topic, partition, offset), so a batch read twice stores each message once.
    - A database failure rewinds the batch and retries it a second later.
    """

    def __init__(
        self,
        *,
        streams: list[str] | None = None,
        group_id: str | None = None,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
    ) -> None:
        self.conf = pipeline_settings()
        self.streams = list(streams or self.conf.streams)
        self.topics = [self.conf.dlq_topic(s) for s in self.streams]
        self.group_id = group_id or store_group(self.conf)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self._stop = threading.Event()
        self._consumer: Any = None

    def stop(self) -> None:
        """Ask `run()` to finish the batch in flight and return (signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        self._consumer = build_consumer(self.group_id)
        self._consumer.subscribe(self.topics)
        logger.info(
            "storing dead letters of %s as group %s",
            ", ".join(self.topics),
            self.group_id,
        )
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(
                    num_messages=self.batch_size, timeout=self.poll_timeout
                )
                usable = [m for m in messages if _usable(m)]
                if usable:
                    self._store(usable)
        finally:
            self._consumer.close()
            close_old_connections()
            logger.info("dead-letter store of group %s stopped", self.group_id)

    def _store(self, messages: list[Message]) -> None:
        close_old_connections()
        try:
            stored = store_dead_letters(messages)
        except DatabaseError:
            logger.exception("database failure; the dead letters will be read again")
            self._rewind(messages)
            self._stop.wait(1.0)
            return
        logger.info("stored %d new dead letter(s)", stored)
        ends: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic(), m.partition())
            ends[tp] = max(ends.get(tp, 0), m.offset() + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in; reading the messages again inserts nothing.
            logger.warning("dead-letter offset commit failed: %s", exc)

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic(), m.partition())
            first[tp] = min(first.get(tp, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                logger.warning("seek %s[%d] failed: %s", topic, partition, exc)


def store_dead_letters(messages: list[Message]) -> int:
    """Insert a row per DLQ message, skipping stored ones; return how many were new.

    The count is for logging only: a concurrent store may insert a row in between.
    """
    rows = [dead_letter_from_message(m) for m in messages]
    keys = {(r.dlq_topic, r.dlq_partition, r.dlq_offset) for r in rows}
    existing = {
        k
        for k in DeadLetter.objects.filter(
            dlq_topic__in={k[0] for k in keys}, dlq_offset__in={k[2] for k in keys}
        ).values_list("dlq_topic", "dlq_partition", "dlq_offset")
        if k in keys
    }
    # ON CONFLICT DO NOTHING: a message read again (or by two stores) is one row.
    DeadLetter.objects.bulk_create(rows, ignore_conflicts=True)
    return len(keys - existing)


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        logger.error("dead-letter consume error: %s", error)
    return False
