"""A DLQ message as a DeadLetter row, and the row's headers back as Kafka headers.

Pure conversion, shared by the store (message -> row) and requeue (row -> message).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from events.core import headers as dl
from events.core.kafka import Message
from events.models import DeadLetter, FailedAttempt

StoredHeaders = list[list[Any]]


def dead_letter_from_message(message: Message) -> DeadLetter:
    """Build (unsaved) the DeadLetter row of one DLQ message."""
    raw_headers = message.headers() or []
    h = dl.header_map(raw_headers)
    value = message.value()
    key = message.key()
    payload = _json_or_none(value)
    envelope = payload if isinstance(payload, dict) else {}
    failed_at = _ms_to_datetime(h.get(dl.DLT_FAILED_AT))
    event_id = _uuid_or_none(envelope.get("id") or h.get(dl.EVENT_ID))
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
        event_type=str(envelope.get("type") or h.get(dl.EVENT_TYPE, ""))[:100],
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
        replay_count=_int(h.get(dl.REPLAY_COUNT)) or 0,
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
