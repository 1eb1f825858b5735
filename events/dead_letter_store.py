"""The dead-letter store: DLQ topics -> DeadLetter rows that operators browse and requeue.

Entry point: `DeadLetterStoreRunner(...).run()`, started by `manage.py run_consumers`
next to the handlers' consumers (see its `--dead-letters` option).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, close_old_connections

from events import dead_letters as dl
from events.conf import PipelineSettings, pipeline_settings
from events.kafka import (
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
    build_consumer,
)
from events.models import DeadLetter, FailedAttempt

logger = logging.getLogger(__name__)

REPLAY_COUNT = "x-replay-count"
REQUEUED_FROM = "x-requeued-from"

StoredHeaders = list[list[Any]]


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


def dead_letter_from_message(message: Message) -> DeadLetter:
    """Build (unsaved) the DeadLetter row of one DLQ message."""
    raw_headers = message.headers() or []
    h = dl.header_map(raw_headers)
    value = message.value()
    key = message.key()
    payload = _json_or_none(value)
    envelope = payload if isinstance(payload, dict) else {}
    failed_at = _ms_to_datetime(h.get(dl.DLT_FAILED_AT))
    event_id = _uuid_or_none(envelope.get("id") or h.get("event_id"))
    handler = h.get(dl.DLT_HANDLER, "")
    return DeadLetter(
        dlq_topic=message.topic(),
        dlq_partition=message.partition(),
        dlq_offset=message.offset(),
        key=key,
        key_text=(key or b"").decode("utf-8", "replace")[:255],
        value=value,
        headers=encode_headers(raw_headers),
        payload=payload,
        event_id=event_id,
        event_type=str(envelope.get("type") or h.get("event_type", ""))[:100],
        error_class=h.get(dl.DLT_EXCEPTION_FQCN, "")[:255],
        error_message=h.get(dl.DLT_EXCEPTION_MESSAGE, ""),
        traceback=h.get(dl.DLT_EXCEPTION_STACKTRACE, ""),
        original_topic=h.get(dl.DLT_ORIGINAL_TOPIC, ""),
        original_partition=_int(h.get(dl.DLT_ORIGINAL_PARTITION)),
        original_offset=_int(h.get(dl.DLT_ORIGINAL_OFFSET)),
        original_timestamp=_ms_to_datetime(h.get(dl.DLT_ORIGINAL_TIMESTAMP)),
        attempts=_int(h.get(dl.DLT_ATTEMPTS)) or 0,
        handler=handler,
        consumer_group=h.get(dl.DLT_ORIGINAL_CONSUMER_GROUP, ""),
        replay_count=_int(h.get(REPLAY_COUNT)) or 0,
        first_failed_at=_first_failure(event_id, handler) or failed_at,
        last_failed_at=failed_at,
    )


def encode_headers(headers: list[tuple[str, bytes | None]]) -> StoredHeaders:
    """Headers as JSON: text where the bytes are UTF-8, base64 otherwise."""
    out: StoredHeaders = []
    for name, value in headers:
        if value is None:
            out.append([name, None])
            continue
        try:
            out.append([name, value.decode("utf-8")])
        except UnicodeDecodeError:
            out.append([name, {"base64": base64.b64encode(value).decode()}])
    return out


def decode_headers(stored: StoredHeaders) -> list[tuple[str, bytes | None]]:
    """The exact header bytes back from `encode_headers`' JSON."""
    out: list[tuple[str, bytes | None]] = []
    for name, value in stored:
        if value is None:
            out.append((name, None))
        elif isinstance(value, dict):
            out.append((name, base64.b64decode(value["base64"])))
        else:
            out.append((name, str(value).encode("utf-8")))
    return out


def _first_failure(event_id: uuid.UUID | None, handler: str) -> datetime | None:
    if event_id is None:
        return None
    return (
        FailedAttempt.objects.filter(event_id=event_id, handler=handler)
        .order_by("failed_at")
        .values_list("failed_at", flat=True)
        .first()
    )


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        logger.error("dead-letter consume error: %s", error)
    return False


def _json_or_none(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _ms_to_datetime(value: str | None) -> datetime | None:
    ms = _int(value)
    if ms is None or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
