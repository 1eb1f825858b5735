"""Pure pieces of the pipeline: backoff, the storm guard, header building, decoding."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.consumer.failures.storm_guard import DeadLetterRateGuard
from events.core import headers as dl
from events.core.conf import RetryPolicy, pipeline_settings
from events.core.types import PoisonMessage, decode, new_envelope, new_event_id
from tests.effects.event_types import TestPinged


def test_backoff_doubles_from_the_reports_one_second_and_is_capped() -> None:
    policy = RetryPolicy(
        attempts=6, initial_backoff_ms=1000, multiplier=2, max_backoff_ms=5000
    )
    assert [policy.delay_ms(n) for n in range(1, 6)] == [1000, 2000, 4000, 5000, 5000]


def test_a_policy_without_attempts_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_storm_guard_allows_the_limit_per_window_then_refuses_until_it_slides() -> None:
    now = [0.0]
    guard = DeadLetterRateGuard(
        max_dead_letters=3, window_seconds=10, clock=lambda: now[0]
    )
    assert [guard.try_acquire() for _ in range(4)] == [True, True, True, False]
    now[0] = 9.9
    assert not guard.try_acquire()
    now[0] = 10.0
    assert guard.try_acquire()


def test_dead_letter_headers_keep_business_headers_and_cap_the_traceback() -> None:
    try:
        raise RuntimeError("x" * 50_000)
    except RuntimeError as exc:
        error = exc
    origin = dl.Origin("orders", 2, 41, 1700000000000)
    headers = dl.dead_letter_headers(
        [("event_id", b"e1"), (dl.RETRY_ATTEMPT, b"2")],
        origin=origin,
        handler="h",
        attempts=3,
        group="g",
        error=error,
    )
    names = [k for k, _ in headers]
    assert names.count("event_id") == 1 and dl.RETRY_ATTEMPT not in names
    values = dict(headers)
    assert len(values[dl.DLT_EXCEPTION_STACKTRACE]) <= dl.MAX_TRACEBACK_BYTES
    assert values[dl.DLT_EXCEPTION_STACKTRACE].startswith(b"...[truncated]...")
    assert len(values[dl.DLT_EXCEPTION_MESSAGE]) <= dl.MAX_MESSAGE_BYTES
    assert values[dl.DLT_ORIGINAL_OFFSET] == b"\x00\x00\x00\x00\x00\x00\x00\x29"


def test_retry_headers_carry_the_first_coordinates_through_every_retry() -> None:
    first = dl.Origin("orders", 1, 7, 123)
    once = dl.retry_headers([], origin=first, handler="h", attempt=2, due_at_ms=5)
    seen = dl.origin_of(dl.header_map(once), "orders-retry-1", 0, 99, 456)
    assert seen == first
    appended = dl.Origin("orders", 1, 7, 123, dl.TIMESTAMP_LOG_APPEND_TIME)
    again = dl.retry_headers([], origin=appended, handler="h", attempt=2, due_at_ms=5)
    assert dl.origin_of(dl.header_map(again), "orders-retry-1", 0, 99, 456) == appended


def test_stream_of_maps_main_retry_and_dlq_topics_back() -> None:
    conf = pipeline_settings()
    assert conf.stream_of(conf.topic("seat-reserved")) == "seat-reserved"
    assert conf.stream_of(conf.retry_topic("payment-complete", 2)) == "payment-complete"
    assert conf.stream_of(conf.dlq_topic("reservation")) == "reservation"
    assert conf.stream_of("somebody-elses-topic") is None


def test_an_envelope_round_trips_to_the_same_typed_event() -> None:
    event = TestPinged(ping_id="p", n=3, key_id="k")
    event_id, envelope = new_envelope(event)
    decoded = decode(json.dumps(envelope).encode())
    assert decoded.event == event
    assert decoded.event_id == event_id
    assert decoded.aggregate_id == "k"


@given(st.binary(max_size=200))
def test_random_bytes_never_decode_into_an_event_silently(value: bytes) -> None:
    with pytest.raises(PoisonMessage):
        decode(value)


@given(
    st.dictionaries(
        st.sampled_from(["ping_id", "n", "mode", "x"]), st.none() | st.integers()
    )
)
def test_data_of_the_wrong_shape_is_poison(data: dict) -> None:
    # ping_id must be a string: None or an int, or no ping_id at all, is poison.
    with pytest.raises(PoisonMessage):
        decode(_ping_envelope(data))


def _ping_envelope(data: dict, **changes: object) -> bytes:
    envelope = {
        "id": str(uuid.uuid4()),
        "type": "TestPinged",
        "version": 1,
        "occurred_at": "2026-11-25T12:00:00+00:00",
        "aggregate_type": "test",
        "aggregate_id": "a",
        "data": data,
    }
    return json.dumps({**envelope, **changes}).encode()


def test_new_event_ids_are_plain_time_ordered_uuid7s() -> None:
    first = new_event_id()
    second = new_event_id()  # in the same millisecond too: uuid_utils counts within it
    assert type(first) is uuid.UUID and first.version == 7
    assert first < second  # later ids sort after earlier ones
    assert orjson.dumps(first) == f'"{first}"'.encode()


def test_fields_a_consumer_does_not_know_yet_are_ignored_and_defaults_apply() -> None:
    decoded = decode(
        _ping_envelope({"ping_id": "p", "added_later": [1, 2]}, aggregate_id=7)
    )
    assert decoded.event == TestPinged(ping_id="p")
    assert decoded.aggregate_id == "7"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "value is not JSON"),
        (b"[1]", "bad envelope: Expected `object`"),
        (b'{"type": "x"}', "bad envelope: Object missing required field"),
    ],
)
def test_a_bad_envelope_says_what_is_wrong(value: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode(value)


@pytest.mark.parametrize("where", ["envelope", "data"])
def test_invalid_utf8_inside_a_string_is_poison_not_a_crash(where: str) -> None:
    # msgspec decodes strings as strict UTF-8 and raises UnicodeDecodeError, which
    # would have escaped the runner and stopped it at the same message on every start.
    if where == "envelope":
        value = _ping_envelope({"ping_id": "p"}, aggregate_type="K")
    else:
        value = _ping_envelope({"ping_id": "K"})
    with pytest.raises(PoisonMessage):
        decode(value.replace(b'"K"', b'"K\xfc"'))


def test_event_ids_made_in_a_burst_keep_their_time_near_the_clock() -> None:
    # A generator that adds a millisecond per id in the same millisecond (uuid6's)
    # puts a burst's timestamps seconds into the future.
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    newest_ms = ids[-1].int >> 80
    assert abs(newest_ms - time.time() * 1000) < 1000
