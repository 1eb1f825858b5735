"""Housekeeping of the pipeline tables: retention, and the figures that describe them.

Services (`*_prune`, `pipeline_gauges_refresh`) are what the Celery tasks in
events.tasks call; `pipeline_snapshot` is read-only and also feeds the admin index.
`consumer_group_lag` asks the broker itself (a Kafka client per call), for ops tools
such as bench/chaos; the admin reads the lag the consumers report instead
(events.observability.lag).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from events.core.conf import pipeline_settings
from events.observability import metrics

logger = logging.getLogger(__name__)

PRUNE_BATCH = 10_000
BACKLOG_SQL = """
    SELECT count(*) FILTER (WHERE parked_at IS NULL),
           extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)),
           count(*) FILTER (WHERE parked_at IS NOT NULL)
    FROM events_outboxevent
"""


def published_events_prune(*, older_than: timedelta | None = None) -> int:
    """Delete PublishedEvent rows sent before now - retention; return how many."""
    older_than = older_than or timedelta(days=settings.EVENTS_PUBLISHED_RETENTION_DAYS)
    return _prune("events_publishedevent", "sent_at", timezone.now() - older_than)


def inbox_entries_prune(*, older_than: timedelta | None = None) -> int:
    """Delete InboxEntry rows processed before now - retention; return how many.

    An event redelivered after its inbox row is gone would be handled again, so the
    retention must exceed the topics' retention (both 7 days by default) plus the
    longest a consumer group may lag.
    """
    older_than = older_than or timedelta(days=settings.EVENTS_INBOX_RETENTION_DAYS)
    return _prune("events_inboxentry", "processed_at", timezone.now() - older_than)


def _prune(table: str, column: str, before: datetime) -> int:
    # Batches of short transactions: no long lock, no huge WAL burst.
    sql = (
        f"DELETE FROM {table} WHERE id IN "  # noqa: S608 - constant names
        f"(SELECT id FROM {table} WHERE {column} < %s LIMIT %s)"
    )
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [before, PRUNE_BATCH])
            deleted: int = cursor.rowcount
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    if total:
        metrics.PRUNED_ROWS.labels(table=table).inc(total)
        logger.info("pruned %d rows of %s older than %s", total, table, before)
    return total


@dataclass
class PipelineSnapshot:
    backlog: int = 0
    oldest_unsent_age_seconds: float = 0.0
    parked: int = 0
    # (original topic, status) -> count; None when the dead-letter store is absent.
    dead_letters: dict[tuple[str, str], int] | None = field(default=None)

    def dead_letters_by_topic(self, status: str = "new") -> dict[str, int]:
        return {
            topic: count
            for (topic, s), count in sorted((self.dead_letters or {}).items())
            if s == status
        }


def pipeline_snapshot() -> PipelineSnapshot:
    """Read the outbox backlog and the dead letters from the database."""
    snapshot = PipelineSnapshot()
    with connection.cursor() as cursor:
        cursor.execute(BACKLOG_SQL)
        backlog, age, parked = cursor.fetchone()
    snapshot.backlog = backlog or 0
    snapshot.oldest_unsent_age_seconds = float(age or 0)
    snapshot.parked = parked or 0
    snapshot.dead_letters = _dead_letter_counts()
    return snapshot


def _dead_letter_counts() -> dict[tuple[str, str], int] | None:
    # The dead-letter store may not be installed (or migrated) in every deployment.
    try:
        model = apps.get_model("events", "DeadLetter")
    except LookupError:
        return None
    from django.db.models import Count

    try:
        with transaction.atomic():
            rows = model.objects.values_list("original_topic", "status").annotate(
                n=Count("id")
            )
            return {(topic, status): n for topic, status, n in rows}
    except DatabaseError:
        logger.warning("dead letters not countable (table missing?)", exc_info=True)
        return None


def pipeline_gauges_refresh() -> dict[str, float]:
    """Set the backlog, oldest-age, parked and dead-letter gauges from the database."""
    snapshot = pipeline_snapshot()
    metrics.OUTBOX_BACKLOG.set(snapshot.backlog)
    metrics.OUTBOX_OLDEST_AGE.set(snapshot.oldest_unsent_age_seconds)
    metrics.OUTBOX_PARKED_ROWS.set(snapshot.parked)
    if snapshot.dead_letters is not None:
        try:
            statuses = [
                value
                for value, _ in apps.get_model("events", "DeadLetter").Status.choices
            ]
        except (LookupError, AttributeError):
            statuses = []
        topics = {topic for topic, _ in snapshot.dead_letters}
        for topic in topics:
            for status in {
                *statuses,
                *(s for t, s in snapshot.dead_letters if t == topic),
            }:
                metrics.DEAD_LETTERS.labels(status=status, topic=topic).set(
                    snapshot.dead_letters.get((topic, status), 0)
                )
    return {
        "backlog": snapshot.backlog,
        "oldest_unsent_age_seconds": snapshot.oldest_unsent_age_seconds,
        "parked": snapshot.parked,
        "dead_letters": sum((snapshot.dead_letters or {}).values()),
    }


def consumer_group_lag(
    *,
    group_id: str | None = None,
    timeout: float = 2.0,
    topics: list[str] | None = None,
) -> dict[tuple[str, int], int] | None:
    """Lag of the consumer group per (topic, partition) of `topics` (the main topics
    by default), from the broker: high watermark minus committed offset. None if
    Kafka does not answer."""
    from events.core.kafka import KafkaException, TopicPartition, build_consumer

    conf = pipeline_settings()
    if topics is None:
        topics = [conf.topic(stream) for stream in conf.streams]
    consumer = build_consumer(
        group_id or conf.consumer_group,
        **{"socket.connection.setup.timeout.ms": int(timeout * 1000)},
    )
    try:
        metadata = consumer.list_topics(timeout=timeout)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in metadata.topics
            for p in sorted(metadata.topics[topic].partitions)
        ]
        committed = consumer.committed(partitions, timeout=timeout)
        lag: dict[tuple[str, int], int] = {}
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            position = tp.offset if tp.offset >= 0 else _low
            lag[(tp.topic, tp.partition)] = max(0, high - position)
        return lag
    except KafkaException as exc:
        logger.warning("consumer lag not available: %s", exc)
        return None
    finally:
        consumer.close()
