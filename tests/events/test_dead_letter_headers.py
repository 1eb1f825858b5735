"""Dead-letter headers byte for byte: Spring's layout, our extras, reading old letters.

No broker here; tests/events/test_spring_dead_letter_headers.py checks the same bytes
against Spring Kafka's own reader and writer.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from events.core import headers as dl
from events.dead_letters.letter_headers import display_value, read_dead_letter
from events.dead_letters.rows import decode_headers, encode_headers
from tests.events.dead_letter_helpers import legacy_dead_letter_headers

ORIGIN = dl.Origin("orders", 2, 41, 1_700_000_000_123)

# What Spring's DeadLetterPublishingRecoverer writes, in its order (spring-kafka 4.0.7,
# addExceptionInfoHeaders then maybeAddOriginalHeaders).
SPRING_ORDER = [
    dl.DLT_EXCEPTION_FQCN,
    dl.DLT_EXCEPTION_CAUSE_FQCN,
    dl.DLT_EXCEPTION_MESSAGE,
    dl.DLT_EXCEPTION_STACKTRACE,
    dl.DLT_ORIGINAL_TOPIC,
    dl.DLT_ORIGINAL_PARTITION,
    dl.DLT_ORIGINAL_OFFSET,
    dl.DLT_ORIGINAL_TIMESTAMP,
    dl.DLT_ORIGINAL_TIMESTAMP_TYPE,
    dl.DLT_ORIGINAL_CONSUMER_GROUP,
]


def failed(message: str = "boom") -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def letter(
    error: BaseException | None = None, origin: dl.Origin = ORIGIN
) -> dl.Headers:
    return dl.dead_letter_headers(
        [("event_id", b"e1"), (dl.RETRY_ATTEMPT, b"3")],
        origin=origin,
        handler="app.handlers.h",
        attempts=3,
        group="reservations",
        error=error or failed(),
    )


def legacy_letter() -> dl.Headers:
    return legacy_dead_letter_headers(
        dl.Origin("orders", 1234, 41, 1_700_000_000_123),
        group="reservations",
        handler="app.handlers.h",
    )


def test_numeric_spring_headers_are_big_endian_int_and_longs() -> None:
    values = dict(letter())
    assert values[dl.DLT_ORIGINAL_PARTITION] == b"\x00\x00\x00\x02"
    assert values[dl.DLT_ORIGINAL_OFFSET] == b"\x00\x00\x00\x00\x00\x00\x00\x29"
    assert values[dl.DLT_ORIGINAL_TIMESTAMP] == bytes.fromhex("0000018bcfe5687b")
    assert values[dl.DLT_ORIGINAL_TIMESTAMP] == struct.pack(">q", 1_700_000_000_123)


def test_text_spring_headers_are_utf8_with_the_timestamp_type_and_cause() -> None:
    values = dict(letter(failed("bööm")))
    assert values[dl.DLT_ORIGINAL_TOPIC] == b"orders"
    assert values[dl.DLT_ORIGINAL_TIMESTAMP_TYPE] == b"CreateTime"
    assert values[dl.DLT_ORIGINAL_CONSUMER_GROUP] == b"reservations"
    assert values[dl.DLT_EXCEPTION_FQCN] == b"builtins.RuntimeError"
    # Not one of Spring's listener wrappers: its own root cause, as Spring says.
    assert values[dl.DLT_EXCEPTION_CAUSE_FQCN] == b"builtins.RuntimeError"
    assert values[dl.DLT_EXCEPTION_MESSAGE] == "bööm".encode()
    assert values[dl.DLT_EXCEPTION_STACKTRACE].endswith("RuntimeError: bööm\n".encode())
    appended = dl.Origin("orders", 2, 41, 5, dl.TIMESTAMP_LOG_APPEND_TIME)
    stamped = dict(letter(origin=appended))
    assert stamped[dl.DLT_ORIGINAL_TIMESTAMP_TYPE] == b"LogAppendTime"


def test_spring_names_come_in_springs_order_and_our_extras_under_our_prefix() -> None:
    names = [name for name, _ in letter()]
    assert [n for n in names if n.startswith(dl.SPRING_DLT_PREFIX)] == SPRING_ORDER
    assert names[-3:] == [dl.DLT_ATTEMPTS, dl.DLT_HANDLER, dl.DLT_FAILED_AT]
    assert all(n.startswith("x-dlt-") for n in names[-3:])
    values = dict(letter())
    assert values[dl.DLT_ATTEMPTS] == b"3"
    assert values[dl.DLT_HANDLER] == b"app.handlers.h"
    assert names[0] == "event_id" and dl.RETRY_ATTEMPT not in names


def test_an_empty_message_is_left_out_as_spring_leaves_out_a_null_one() -> None:
    names = [name for name, _ in letter(RuntimeError())]
    assert dl.DLT_EXCEPTION_MESSAGE not in names
    assert dl.DLT_EXCEPTION_FQCN in names


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_every_partition_reads_back(partition: int) -> None:
    encoded = dl.encode_int32(partition)
    assert len(encoded) == 4
    if not dl.looks_decimal(encoded):  # the documented overlap, see below
        assert dl.decode_int(encoded, 4) == partition


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_every_offset_and_timestamp_reads_back(value: int) -> None:
    encoded = dl.encode_int64(value)
    assert len(encoded) == 8
    if not dl.looks_decimal(encoded):
        assert dl.decode_int(encoded, 8) == value


def test_old_ascii_decimals_are_read_as_decimals_even_at_the_binary_width() -> None:
    assert dl.decode_int(b"7", 4) == 7
    assert dl.decode_int(b"1234", 4) == 1234  # 4 bytes, but digits: an old letter
    assert dl.decode_int(b"12345678", 8) == 12_345_678
    assert dl.decode_int(b"1700000000123", 8) == 1_700_000_000_123
    assert dl.decode_int(b"-1", 8) == -1
    assert dl.decode_int(dl.encode_int32(1234), 4) == 1234
    assert dl.decode_int(dl.encode_int32(0), 4) == 0  # four NUL bytes
    # The price of the rule: binary values made only of digit bytes, at least
    # 0x30303030 = 808,464,432 as a partition; no topic has that many.
    assert dl.decode_int(dl.encode_int32(0x30303030), 4) == 0
    assert dl.decode_int(b"\x00\x01", 4) is None
    assert dl.decode_int(None, 4) is None


def test_a_dead_letter_reads_back_as_written() -> None:
    read = read_dead_letter(letter())
    assert (read.original_topic, read.original_partition, read.original_offset) == (
        "orders",
        2,
        41,
    )
    assert read.original_timestamp_ms == 1_700_000_000_123
    assert read.original_timestamp_type == "CreateTime"
    assert read.consumer_group == "reservations"
    assert read.exception_fqcn == read.exception_cause_fqcn == "builtins.RuntimeError"
    assert read.exception_message == "boom"
    assert (read.attempts, read.handler) == (3, "app.handlers.h")
    assert read.failed_at_ms is not None and read.failed_at_ms > 1_700_000_000_000


def test_an_old_dead_letter_reads_with_its_ascii_numbers_and_old_names() -> None:
    read = read_dead_letter(legacy_letter())
    assert (read.original_partition, read.original_offset) == (1234, 41)
    assert read.original_timestamp_ms == 1_700_000_000_123
    assert read.original_timestamp_type == ""
    assert (read.attempts, read.handler) == (3, "app.handlers.h")
    assert read.failed_at_ms == 1_700_000_000_999
    assert read.exception_message == "boom"


def test_the_new_names_win_over_the_old_ones() -> None:
    both = [*legacy_letter(), (dl.DLT_ATTEMPTS, b"5"), (dl.DLT_HANDLER, b"new.h")]
    read = read_dead_letter(both)
    assert (read.attempts, read.handler) == (5, "new.h")


def test_bookkeeping_of_every_generation_is_stripped_business_headers_stay() -> None:
    spring_key_error = (dl.DLT_KEY_EXCEPTION_FQCN, b"x.Y")
    mixed = [*letter(), *legacy_letter(), spring_key_error, ("trace_id", b"t")]
    kept = dl.business_headers(mixed)
    assert {name for name, _ in kept} == {"event_id", "trace_id"}


def test_binary_headers_are_stored_as_base64_and_come_back_exact() -> None:
    headers = letter()
    stored = encode_headers(headers)
    by_name = dict(stored)
    # Four NUL bytes are valid UTF-8 but not storable as jsonb text.
    assert by_name[dl.DLT_ORIGINAL_PARTITION] == {"base64": "AAAAAg=="}
    assert isinstance(by_name[dl.DLT_EXCEPTION_STACKTRACE], str)  # newlines are text
    assert by_name[dl.DLT_ORIGINAL_TOPIC] == "orders"
    assert decode_headers(stored) == headers


def test_numbers_display_as_decimals_old_or_new() -> None:
    values = dict(letter())
    assert (
        display_value(dl.DLT_ORIGINAL_PARTITION, values[dl.DLT_ORIGINAL_PARTITION])
        == "2"
    )
    assert display_value(dl.DLT_ORIGINAL_OFFSET, values[dl.DLT_ORIGINAL_OFFSET]) == "41"
    assert (
        display_value(dl.DLT_ORIGINAL_TIMESTAMP, values[dl.DLT_ORIGINAL_TIMESTAMP])
        == "1700000000123"
    )
    assert display_value(dl.DLT_ORIGINAL_OFFSET, b"41") == "41"
    assert display_value(dl.DLT_ORIGINAL_OFFSET, b"\x01\x02") == "0x0102"
    assert display_value(dl.DLT_EXCEPTION_FQCN, b"builtins.RuntimeError") == (
        "builtins.RuntimeError"
    )
