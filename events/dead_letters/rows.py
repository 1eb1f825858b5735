"""A DLQ message as a DeadLetter row, and the row's headers back as Kafka headers.

Pure conversion, shared by the store (message -> row) and requeue (row -> message).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from events.core import headers as dl
from events.core.kafka import Record
from events.dead_letters.letter_headers import read_dead_letter
from events.models import DeadLetter, FailedAttempt

StoredHeaders = list[list[Any]]

# A dead letter's fields are whatever some producer wrote: what PostgreSQL would refuse
# (NUL in text, text past a column's length, numbers past a column's range) is made to
# fit, or one bad letter would stop the store on every read of its batch.
INT32 = (0, 2**31 - 1)
INT64 = (0, 2**63 - 1)

# Control characters other than tab, newline and carriage return (tracebacks have those).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def dead_letter_from_message(message: Record) -> DeadLetter:
    """Build (unsaved) the DeadLetter row of one DLQ message.

    Reads ours, Spring's and our old (ASCII-decimal) dead letters alike: the decoding
    and its rule for old letters are `events.dead_letters.letter_headers.read_dead_letter`'s.
    """
    raw_headers = message.headers() or []
    h = dl.header_map(raw_headers)
    letter = read_dead_letter(raw_headers)
    value = message.value()
    key = message.key()
    payload = _json_or_none(value)
    envelope = payload if isinstance(payload, dict) else {}
    failed_at = _ms_to_datetime(letter.failed_at_ms)
    event_id = _uuid_or_none(envelope.get("id") or h.get(dl.EVENT_ID))
    handler = letter.handler
    return DeadLetter(
        dlq_topic=message.topic(),
        dlq_partition=message.partition(),
        dlq_offset=message.offset(),
        key=key,
        key_text=_text((key or b"").decode("utf-8", "replace"), 255),
        value=value,
        headers=encode_headers(raw_headers),
        payload=payload,
        event_id=event_id,
        event_type=_text(str(envelope.get("type") or h.get(dl.EVENT_TYPE, "")), 100),
        error_class=_text(letter.exception_fqcn, 255),
        error_message=_text(letter.exception_message),
        traceback=_text(letter.exception_stacktrace),
        original_topic=_text(letter.original_topic, 249),
        original_partition=_in_range(letter.original_partition, INT32),
        original_offset=_in_range(letter.original_offset, INT64),
        original_timestamp=_ms_to_datetime(letter.original_timestamp_ms),
        attempts=_in_range(letter.attempts, INT32) or 0,
        handler=_text(handler, 200),
        consumer_group=_text(letter.consumer_group, 255),
        replay_count=_in_range(
            dl.decode_decimal(dl.raw_header_map(raw_headers).get(dl.REPLAY_COUNT)),
            INT32,
        )
        or 0,
        first_failed_at=_first_failure(event_id, handler) or failed_at,
        last_failed_at=failed_at,
    )


def encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> StoredHeaders:
    """Headers as JSON: text where the bytes are UTF-8 text, base64 otherwise.

    Binary values (Spring's 4- and 8-byte numbers) are base64 even when they happen to
    be valid UTF-8: they are mostly NUL bytes, which PostgreSQL's jsonb refuses in text.
    """
    out: StoredHeaders = []
    for name, value in headers:
        if value is None:
            out.append([name, None])
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not _CONTROL.search(text):
            out.append([name, text])
        else:
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
    # jsonb refuses a NUL character in text: such a payload is kept only as bytes.
    if value is None or b"\\u0000" in value:
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


def _ms_to_datetime(ms: int | None) -> datetime | None:
    if ms is None or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):  # past year 9999: not a real time
        return None


def _text(value: str, limit: int | None = None) -> str:
    cleaned = value.replace("\x00", "\ufffd")
    return cleaned[:limit] if limit is not None else cleaned


def _in_range(value: int | None, bounds: tuple[int, int]) -> int | None:
    low, high = bounds
    return value if value is not None and low <= value <= high else None
