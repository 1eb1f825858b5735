"""What a dead letter's headers say, decoded for the store and the admin.

Reads ours, Spring's (the same bytes: events.core.headers writes them as Spring's
DeadLetterPublishingRecoverer does) and ours from before that encoding (ASCII decimals
and our extras under Spring's prefix): the rule is events.core.headers.decode_int's.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.core.headers import (
    DLT_ATTEMPTS,
    DLT_EXCEPTION_CAUSE_FQCN,
    DLT_EXCEPTION_FQCN,
    DLT_EXCEPTION_MESSAGE,
    DLT_EXCEPTION_STACKTRACE,
    DLT_FAILED_AT,
    DLT_HANDLER,
    DLT_ORIGINAL_CONSUMER_GROUP,
    DLT_ORIGINAL_OFFSET,
    DLT_ORIGINAL_PARTITION,
    DLT_ORIGINAL_TIMESTAMP,
    DLT_ORIGINAL_TIMESTAMP_TYPE,
    DLT_ORIGINAL_TOPIC,
    INT32_HEADERS,
    INT64_HEADERS,
    LEGACY_DLT_ATTEMPTS,
    LEGACY_DLT_FAILED_AT,
    LEGACY_DLT_HANDLER,
    RawHeaders,
    decode_decimal,
    decode_int,
    raw_header_map,
)


@dataclass(frozen=True)
class DeadLetterHeaders:
    """What a dead letter's headers say, decoded (None or "" where a header is absent)."""

    original_topic: str
    original_partition: int | None
    original_offset: int | None
    original_timestamp_ms: int | None
    original_timestamp_type: str
    consumer_group: str
    exception_fqcn: str
    exception_cause_fqcn: str
    exception_message: str
    exception_stacktrace: str
    attempts: int | None
    handler: str
    failed_at_ms: int | None


def read_dead_letter(headers: RawHeaders | None) -> DeadLetterHeaders:
    """Decode a dead letter's headers: ours, Spring's, or ours from before the Spring
    encoding (see the module docstring for the rule)."""
    h = raw_header_map(headers)

    def text(*names: str) -> str:
        for name in names:
            value = h.get(name)
            if value is not None:
                return value.decode("utf-8", "replace")
        return ""

    def number(width: int, name: str) -> int | None:
        return decode_int(h.get(name), width)

    def decimal(*names: str) -> int | None:
        for name in names:
            value = decode_decimal(h.get(name))
            if value is not None:
                return value
        return None

    return DeadLetterHeaders(
        original_topic=text(DLT_ORIGINAL_TOPIC),
        original_partition=number(4, DLT_ORIGINAL_PARTITION),
        original_offset=number(8, DLT_ORIGINAL_OFFSET),
        original_timestamp_ms=number(8, DLT_ORIGINAL_TIMESTAMP),
        original_timestamp_type=text(DLT_ORIGINAL_TIMESTAMP_TYPE),
        consumer_group=text(DLT_ORIGINAL_CONSUMER_GROUP),
        exception_fqcn=text(DLT_EXCEPTION_FQCN),
        exception_cause_fqcn=text(DLT_EXCEPTION_CAUSE_FQCN),
        exception_message=text(DLT_EXCEPTION_MESSAGE),
        exception_stacktrace=text(DLT_EXCEPTION_STACKTRACE),
        # Our own, under their old names in old letters.
        attempts=decimal(DLT_ATTEMPTS, LEGACY_DLT_ATTEMPTS),
        handler=text(DLT_HANDLER, LEGACY_DLT_HANDLER),
        failed_at_ms=decimal(DLT_FAILED_AT, LEGACY_DLT_FAILED_AT),
    )


def display_value(name: str, value: bytes | None) -> str:
    """A header value for people: Spring's binary numbers as decimals, the rest as text."""
    if value is None:
        return ""
    width = 4 if name in INT32_HEADERS else 8 if name in INT64_HEADERS else 0
    if width:
        number = decode_int(value, width)
        if number is not None:
            return str(number)
        return "0x" + value.hex()
    return value.decode("utf-8", "replace")
