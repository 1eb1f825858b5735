"""The header vocabulary: every Kafka header name the pipeline writes or reads, and codecs.

The relay, the consumer, the dead-letter publisher, the store and requeue all name
headers through this module, so a header is spelled once. Three families:
- the event's own headers (written by `publish`, carried unchanged everywhere);
- retry bookkeeping (`x-retry-*`, `x-original-*`): our own names;
- dead-letter headers: Spring Kafka's `kafka_dlt-*` names, written byte for byte as
  Spring writes them, and our own `x-dlt-*` for what Spring does not write.

Entry points: `retry_headers`, `dead_letter_headers` (writing), `origin_of`,
`read_dead_letter` and `display_value` (reading).

Spring Kafka 4.0.7 (tag v4.0.7 of spring-projects/spring-kafka) is the reference:
- spring-kafka/src/main/java/org/springframework/kafka/support/KafkaHeaders.java: the
  names, `kafka_` + `dlt-original-topic`, `-partition`, `-offset`, `-timestamp`,
  `-timestamp-type`, `-consumer-group`, `dlt-exception-fqcn`, `-cause-fqcn`, `-message`,
  `-stacktrace`.
- spring-kafka/src/main/java/org/springframework/kafka/listener/
  DeadLetterPublishingRecoverer.java: `addExceptionInfoHeaders` then
  `maybeAddOriginalHeaders` write, in that order, the exception's class name, its root
  cause's class name (`ErrorHandlingUtils.findRootCause`, which unwraps only Spring's own
  `ListenerExecutionFailedException`/`TimestampedException`: an unwrapped exception is
  its own root cause), the message (left out when null), the stack trace, all UTF-8; the
  original topic (UTF-8), partition `ByteBuffer.allocate(4).putInt(...)` (4 bytes,
  big-endian), offset and timestamp `ByteBuffer.allocate(8).putLong(...)` (8 bytes,
  big-endian), the timestamp type as `TimestampType.toString()` in UTF-8 ("CreateTime",
  "LogAppendTime", "NoTimestampType") and the consumer group (UTF-8, when the failure
  carries one).
- Reading: `JsonKafkaHeaderMapper.toHeaders` (support/JsonKafkaHeaderMapper.java,
  `AbstractKafkaHeaderMapper.headerValueToAddIn`) hands these headers to a listener as raw
  `byte[]`; `@Header` parameters convert them with `BytesToNumberConverter` (annotation/
  KafkaListenerAnnotationBeanPostProcessor.java: `ByteBuffer.wrap(bytes).getInt()` for
  an int after asserting at least 4 bytes, `getLong()` for a long after asserting at
  least 8) and `BytesToStringConverter` (UTF-8). An ASCII "7" fails the first assertion;
  an ASCII 13-digit timestamp passes and reads as the number its first 8 digits spell.
  ops/spring-dlt-check runs that code on our dead letters in the test suite.

Reading old dead letters (written before the Spring encoding, still in topics and
tables): the numeric `kafka_dlt-original-*` headers were ASCII decimals, and attempts,
handler and failed-at were `kafka_dlt-attempts`, `-handler`, `-failed-at`. `decode_int`
takes a value that is entirely an optional "-" and ASCII digits as a decimal, and any
other value of the exact width (4 or 8 bytes) as big-endian binary. The one overlap, a
binary value whose bytes are all ASCII digits (or a "-" then digits), means a partition
of at least 0x2D303030 = 758,132,784, or an offset or millisecond timestamp of at least
0x2D30303030303030 (about 3.3e18: a hundred million years in ms): no real coordinate.
So a legacy "1234" (4 bytes) is partition 1234, and binary 1234 is b"\\0\\0\\x04\\xd2".
The new `x-dlt-*` names are read first, the old ones as a fallback.
"""

from __future__ import annotations

import re
import struct
import time
import traceback
from collections.abc import Sequence
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
REQUEUE_HEADERS = frozenset({REPLAY_COUNT, REQUEUED_FROM})

RETRY_HANDLER = "x-retry-handler"
RETRY_ATTEMPT = "x-retry-attempt"
RETRY_DUE_AT_MS = "x-retry-due-at-ms"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_TIMESTAMP = "x-original-timestamp"
ORIGINAL_TIMESTAMP_TYPE = "x-original-timestamp-type"

# Spring Kafka's dead-letter headers (KafkaHeaders.DLT_*), with Spring's encodings.
SPRING_DLT_PREFIX = "kafka_dlt-"
DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"  # UTF-8
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"  # int32, big-endian
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"  # int64, big-endian
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"  # int64 ms, big-endian
DLT_ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"  # UTF-8
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"  # UTF-8
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"  # UTF-8
DLT_EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"  # UTF-8
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"  # UTF-8
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"  # UTF-8
# Spring writes these for key deserialization failures; we read and strip, never write.
DLT_KEY_EXCEPTION_FQCN = "kafka_dlt-key-exception-fqcn"
DLT_KEY_EXCEPTION_MESSAGE = "kafka_dlt-key-exception-message"
DLT_KEY_EXCEPTION_STACKTRACE = "kafka_dlt-key-exception-stacktrace"

# Our own dead-letter headers, ASCII decimals and UTF-8 like the retry headers.
DLT_ATTEMPTS = "x-dlt-attempts"
DLT_HANDLER = "x-dlt-handler"
DLT_FAILED_AT = "x-dlt-failed-at"

# Where dead letters written before the Spring encoding kept them (read, never written).
LEGACY_DLT_ATTEMPTS = "kafka_dlt-attempts"
LEGACY_DLT_HANDLER = "kafka_dlt-handler"
LEGACY_DLT_FAILED_AT = "kafka_dlt-failed-at"

INT32_HEADERS = frozenset({DLT_ORIGINAL_PARTITION})
INT64_HEADERS = frozenset({DLT_ORIGINAL_OFFSET, DLT_ORIGINAL_TIMESTAMP})

# confluent-kafka's Message.timestamp() types -> Kafka's TimestampType names (Spring's
# timestamp-type header is TimestampType.toString()).
TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1
TIMESTAMP_LOG_APPEND_TIME = 2
TIMESTAMP_TYPE_NAMES = {
    TIMESTAMP_NOT_AVAILABLE: "NoTimestampType",
    TIMESTAMP_CREATE_TIME: "CreateTime",
    TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime",
}
_TIMESTAMP_TYPES_BY_NAME = {name: kind for kind, name in TIMESTAMP_TYPE_NAMES.items()}

# Headers we add (and Spring's); they are dropped before adding fresh ones, so they
# never pile up, and a requeued dead letter, ours or Spring's, goes out clean. Any other
# `kafka_dlt-*` name counts too (`is_pipeline_header`).
PIPELINE_HEADERS = frozenset(
    {
        RETRY_HANDLER,
        RETRY_ATTEMPT,
        RETRY_DUE_AT_MS,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        ORIGINAL_TIMESTAMP_TYPE,
        DLT_ORIGINAL_TOPIC,
        DLT_ORIGINAL_PARTITION,
        DLT_ORIGINAL_OFFSET,
        DLT_ORIGINAL_TIMESTAMP,
        DLT_ORIGINAL_TIMESTAMP_TYPE,
        DLT_ORIGINAL_CONSUMER_GROUP,
        DLT_EXCEPTION_FQCN,
        DLT_EXCEPTION_CAUSE_FQCN,
        DLT_EXCEPTION_MESSAGE,
        DLT_EXCEPTION_STACKTRACE,
        DLT_KEY_EXCEPTION_FQCN,
        DLT_KEY_EXCEPTION_MESSAGE,
        DLT_KEY_EXCEPTION_STACKTRACE,
        DLT_ATTEMPTS,
        DLT_HANDLER,
        DLT_FAILED_AT,
        LEGACY_DLT_ATTEMPTS,
        LEGACY_DLT_HANDLER,
        LEGACY_DLT_FAILED_AT,
    }
)

Headers = list[tuple[str, bytes]]
# What a reader takes: a Message's headers, or ones decoded from a stored row.
RawHeaders = Sequence[tuple[str, bytes | None]]

_DECIMAL = re.compile(rb"-?[0-9]+")
_INT_FORMATS = {4: ">i", 8: ">q"}


@dataclass(frozen=True)
class Origin:
    """Where a message was first consumed, before any retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: int = TIMESTAMP_CREATE_TIME


def encode_int32(value: int) -> bytes:
    """4 bytes, big-endian: Java's `ByteBuffer.allocate(4).putInt(value)`."""
    return struct.pack(">i", value)


def encode_int64(value: int) -> bytes:
    """8 bytes, big-endian: Java's `ByteBuffer.allocate(8).putLong(value)`."""
    return struct.pack(">q", value)


def decode_int(value: bytes | None, width: int) -> int | None:
    """A numeric dead-letter header: ASCII decimal (old letters) or binary of `width`.

    See the module docstring for why an all-digits value is taken as a decimal.
    None for an absent or unreadable value.
    """
    if value is None:
        return None
    if looks_decimal(value):
        return int(value)
    if len(value) == width:
        return int(struct.unpack(_INT_FORMATS[width], value)[0])
    return None


def looks_decimal(value: bytes) -> bool:
    """An optional "-" and ASCII digits only: how our old numeric headers look."""
    return _DECIMAL.fullmatch(value) is not None


def decode_decimal(value: bytes | None) -> int | None:
    """One of our own numeric headers (`x-*`): an ASCII decimal, or None."""
    if value is None or not looks_decimal(value):
        return None
    return int(value)


def header_map(headers: Headers | None) -> dict[str, str]:
    """Headers as str -> str (the last value wins; undecodable bytes are replaced).

    For text headers only: binary ones come out garbled (see `raw_header_map`).
    """
    out: dict[str, str] = {}
    for key, value in headers or []:
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out


def raw_header_map(headers: RawHeaders | None) -> dict[str, bytes | None]:
    """Headers as str -> bytes (the last value wins, as Spring's `lastHeader`)."""
    return dict(headers or [])


def is_pipeline_header(name: str) -> bool:
    """True for the bookkeeping we add (and strip): retry, dead-letter, Spring's DLT."""
    return name in PIPELINE_HEADERS or name.startswith(SPRING_DLT_PREFIX)


def business_headers(headers: Headers | None) -> Headers:
    """The event's own headers: everything but our retry and dead-letter bookkeeping."""
    return [(k, v) for k, v in headers or [] if not is_pipeline_header(k)]


def origin_of(
    headers: dict[str, str],
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    *,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
) -> Origin:
    """The first coordinates: from retry headers if present, else the message's own."""
    if ORIGINAL_TOPIC in headers:
        try:
            return Origin(
                topic=headers[ORIGINAL_TOPIC],
                partition=int(headers[ORIGINAL_PARTITION]),
                offset=int(headers[ORIGINAL_OFFSET]),
                timestamp_ms=int(headers.get(ORIGINAL_TIMESTAMP, "0")),
                timestamp_type=_TIMESTAMP_TYPES_BY_NAME.get(
                    headers.get(ORIGINAL_TIMESTAMP_TYPE, ""), TIMESTAMP_CREATE_TIME
                ),
            )
        except (KeyError, ValueError):
            pass
    return Origin(topic, partition, offset, timestamp_ms, timestamp_type)


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
        (ORIGINAL_TIMESTAMP_TYPE, _timestamp_type_name(origin.timestamp_type)),
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
    """Headers for a dead letter: the original headers plus why and where it failed.

    The `kafka_dlt-*` ones as Spring's DeadLetterPublishingRecoverer writes them, in its
    order (exception, then original coordinates); then our `x-dlt-*` ones. The error
    reaches us unwrapped, so it is its own root cause, as Spring reports an exception
    that is not one of its listener wrappers. An empty message is left out, as Spring
    leaves out a null one.
    """
    error_class = _class_name(error)
    stack = "".join(traceback.format_exception(error))
    message = str(error)
    out = business_headers(headers)
    out.append((DLT_EXCEPTION_FQCN, error_class.encode()))
    out.append((DLT_EXCEPTION_CAUSE_FQCN, error_class.encode()))
    if message:
        out.append((DLT_EXCEPTION_MESSAGE, _capped(message, MAX_MESSAGE_BYTES)))
    out += [
        (
            DLT_EXCEPTION_STACKTRACE,
            _capped(stack, MAX_TRACEBACK_BYTES, keep_end=True),
        ),
        (DLT_ORIGINAL_TOPIC, origin.topic.encode()),
        (DLT_ORIGINAL_PARTITION, encode_int32(origin.partition)),
        (DLT_ORIGINAL_OFFSET, encode_int64(origin.offset)),
        (DLT_ORIGINAL_TIMESTAMP, encode_int64(origin.timestamp_ms)),
        (DLT_ORIGINAL_TIMESTAMP_TYPE, _timestamp_type_name(origin.timestamp_type)),
        (DLT_ORIGINAL_CONSUMER_GROUP, group.encode()),
        (DLT_ATTEMPTS, str(attempts).encode()),
        (DLT_HANDLER, handler.encode()),
        (DLT_FAILED_AT, str(int(time.time() * 1000)).encode()),
    ]
    return out


def _class_name(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _timestamp_type_name(kind: int) -> bytes:
    return TIMESTAMP_TYPE_NAMES.get(
        kind, TIMESTAMP_TYPE_NAMES[TIMESTAMP_NOT_AVAILABLE]
    ).encode()


def _capped(text: str, limit: int, *, keep_end: bool = False) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    marker = b"...[truncated]..."
    room = limit - len(marker)
    # A traceback's last lines name the error; keep those when cutting.
    return marker + data[-room:] if keep_end else data[:room] + marker
