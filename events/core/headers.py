"""The header vocabulary: every Kafka header name the pipeline writes or reads, and codecs.

The relay, the consumer, the dead-letter publisher, the store and requeue all name
headers through this module, so a header is spelled once. Three families:
- the event's own headers (written by `publish`, carried unchanged everywhere);
- retry bookkeeping (`x-retry-*`, `x-original-*`): our own names;
- dead-letter headers: Spring Kafka's `kafka_dlt-*` names where Spring has them, and
  our own prefix for what Spring does not write.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

MAX_TRACEBACK_BYTES = 8_192
MAX_MESSAGE_BYTES = 2_048

# The event's own headers: written by events.core.outbox.publish on every event.
EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
TRACE_ID = "trace_id"
SCHEMA_VERSION = "schema_version"

# Added by requeue (events.dead_letters.requeue) to a dead letter sent back.
REPLAY_COUNT = "x-replay-count"
REQUEUED_FROM = "x-requeued-from"

RETRY_HANDLER = "x-retry-handler"
RETRY_ATTEMPT = "x-retry-attempt"
RETRY_DUE_AT_MS = "x-retry-due-at-ms"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_TIMESTAMP = "x-original-timestamp"

DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"
DLT_ATTEMPTS = "kafka_dlt-attempts"
DLT_HANDLER = "kafka_dlt-handler"
DLT_FAILED_AT = "kafka_dlt-failed-at"

# Headers we add; they are dropped before adding fresh ones, so they never pile up.
PIPELINE_HEADERS = frozenset(
    {
        RETRY_HANDLER,
        RETRY_ATTEMPT,
        RETRY_DUE_AT_MS,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        DLT_ORIGINAL_TOPIC,
        DLT_ORIGINAL_PARTITION,
        DLT_ORIGINAL_OFFSET,
        DLT_ORIGINAL_TIMESTAMP,
        DLT_ORIGINAL_CONSUMER_GROUP,
        DLT_EXCEPTION_FQCN,
        DLT_EXCEPTION_MESSAGE,
        DLT_EXCEPTION_STACKTRACE,
        DLT_ATTEMPTS,
        DLT_HANDLER,
        DLT_FAILED_AT,
    }
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Origin:
    """Where a message was first consumed, before any retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def header_map(headers: Headers | None) -> dict[str, str]:
    """Headers as str -> str (the last value wins; undecodable bytes are replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or []:
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out


def business_headers(headers: Headers | None) -> Headers:
    return [(k, v) for k, v in headers or [] if k not in PIPELINE_HEADERS]


def origin_of(
    headers: dict[str, str], topic: str, partition: int, offset: int, timestamp_ms: int
) -> Origin:
    """The first coordinates: from retry headers if present, else the message's own."""
    if ORIGINAL_TOPIC in headers:
        try:
            return Origin(
                topic=headers[ORIGINAL_TOPIC],
                partition=int(headers[ORIGINAL_PARTITION]),
                offset=int(headers[ORIGINAL_OFFSET]),
                timestamp_ms=int(headers.get(ORIGINAL_TIMESTAMP, "0")),
            )
        except (KeyError, ValueError):
            pass
    return Origin(topic, partition, offset, timestamp_ms)


def retry_headers(
    headers: Headers | None,
    *,
    origin: Origin,
    handler: str,
    attempt: int,
    due_at_ms: int,
) -> Headers:
    """Headers for a message sent to a retry topic for `attempt` of `handler`."""
    return business_headers(headers) + [
        (RETRY_HANDLER, handler.encode()),
        (RETRY_ATTEMPT, str(attempt).encode()),
        (RETRY_DUE_AT_MS, str(due_at_ms).encode()),
        (ORIGINAL_TOPIC, origin.topic.encode()),
        (ORIGINAL_PARTITION, str(origin.partition).encode()),
        (ORIGINAL_OFFSET, str(origin.offset).encode()),
        (ORIGINAL_TIMESTAMP, str(origin.timestamp_ms).encode()),
    ]


def dead_letter_headers(
    headers: Headers | None,
    *,
    origin: Origin,
    handler: str,
    attempts: int,
    group: str,
    error: BaseException,
) -> Headers:
    """Headers for a dead letter: the original headers plus why and where it failed."""
    error_class = f"{type(error).__module__}.{type(error).__qualname__}"
    stack = "".join(traceback.format_exception(error))
    return business_headers(headers) + [
        (DLT_ORIGINAL_TOPIC, origin.topic.encode()),
        (DLT_ORIGINAL_PARTITION, str(origin.partition).encode()),
        (DLT_ORIGINAL_OFFSET, str(origin.offset).encode()),
        (DLT_ORIGINAL_TIMESTAMP, str(origin.timestamp_ms).encode()),
        (DLT_ORIGINAL_CONSUMER_GROUP, group.encode()),
        (DLT_EXCEPTION_FQCN, error_class.encode()),
        (DLT_EXCEPTION_MESSAGE, _capped(str(error), MAX_MESSAGE_BYTES)),
        (DLT_EXCEPTION_STACKTRACE, _capped(stack, MAX_TRACEBACK_BYTES, keep_end=True)),
        (DLT_ATTEMPTS, str(attempts).encode()),
        (DLT_HANDLER, handler.encode()),
        (DLT_FAILED_AT, str(int(time.time() * 1000)).encode()),
    ]


def _capped(text: str, limit: int, *, keep_end: bool = False) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    marker = b"...[truncated]..."
    room = limit - len(marker)
    # A traceback's last lines name the error; keep those when cutting.
    return marker + data[-room:] if keep_end else data[:room] + marker
