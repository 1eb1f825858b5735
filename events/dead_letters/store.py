"""The dead-letter store: DLQ topics -> DeadLetter rows that operators browse and requeue.

Entry point: `DeadLetterStoreRunner(...).run()`, started by `manage.py run_consumers`
next to the handlers' consumers (see its `--dead-letters` option). It is the consumer
loop (events.consumer.loop) with the `StoreDeadLetters` strategy.
"""

from __future__ import annotations

import logging

from events.consumer.loop import ConsumerLoop, LoopControl
from events.core.conf import PipelineSettings, pipeline_settings
from events.core.kafka import Record
from events.dead_letters.rows import dead_letter_from_message
from events.models import DeadLetter

logger = logging.getLogger("events.dead_letters")


def store_group(conf: PipelineSettings | None = None) -> str:
    """The store's own consumer group: it reads every DLQ message, whoever else does."""
    conf = conf or pipeline_settings()
    return f"{conf.consumer_group}-dlq-store"


class StoreDeadLetters:
    """Insert one DeadLetter row per DLQ message, then commit the batch's offsets.

    Contract:
    - At least once into an idempotent table: offsets are committed (synchronously)
      only after the batch's rows are inserted; the insert is ON CONFLICT DO NOTHING on
      (topic, partition, offset), so a batch read twice stores each message once.
    - A database failure rewinds the batch and reads it again a second later (the
      loop's rule for every strategy).
    """

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def process(self, messages: list[Record], loop: LoopControl) -> None:
        stored = store_dead_letters(messages)
        logger.info("stored %d new dead letter(s)", stored)
        ends: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic(), m.partition())
            ends[tp] = max(ends.get(tp, 0), m.offset() + 1)
        # If the commit fails, the rows are in: reading the messages again inserts
        # nothing.
        loop.commit(ends)


class DeadLetterStoreRunner(ConsumerLoop):
    """Consume the DLQ topics of some streams into DeadLetter rows until `stop()`."""

    def __init__(
        self,
        *,
        streams: list[str] | None = None,
        group_id: str | None = None,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
    ) -> None:
        conf = pipeline_settings()
        self.streams = list(streams or conf.streams)
        super().__init__(
            topics=[conf.dlq_topic(s) for s in self.streams],
            group_id=group_id or store_group(conf),
            strategy=StoreDeadLetters(),
            batch_size=batch_size,
            poll_timeout=poll_timeout,
            description="storing dead letters of",
            # Its lag is not the pipeline's (the lag gauge has no group label), and
            # the join lines are the handler consumers' (the rebalance benchmark).
            report_lag=False,
            log_joins=False,
            stopped="dead-letter store of group %s stopped",
        )


def store_dead_letters(messages: list[Record]) -> int:
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
