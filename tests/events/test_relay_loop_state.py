"""The relay loop's rules (events.relay.loop_state), without a broker or a database."""

from __future__ import annotations

import pytest

from events.relay.leadership import HEALTHY_SESSION_SECONDS, Reconnects
from events.relay.loop_state import MAX_IN_FLIGHT, Backoff, LoopState
from events.relay.window import EVERYTHING, Row, Window

POLL = 1.0
SNAP = "100:105:"
LATER_SNAP = "110:110:"


def rows(*ids: int) -> list[Row]:
    return [(i, "topic", f"k{i}", "{}", "{}") for i in ids]


def state(batch_size: int = 3, now: float = 0.0, max_backoff: float = 2.0) -> LoopState:
    return LoopState(
        batch_size=batch_size, poll_interval=POLL, max_backoff=max_backoff, now=now
    )


def never_notified() -> bool:
    raise AssertionError("asked for a notification while not caught up")


def test_a_new_session_reads_everything_pending_at_once() -> None:
    s = state()
    assert s.window == Window() and s.window.from_the_start
    assert s.wants_read(in_flight=0, now=0.0, notified=never_notified)


def test_after_a_full_batch_it_pages_on_in_the_same_window_without_waiting() -> None:
    s = state(batch_size=3)
    read = s.read_done(rows(4, 7, 9), SNAP)
    assert read.full and not read.found_nothing
    # The first page's snapshot bounds the window; the next page starts past id 9.
    assert s.window == Window(lower=EVERYTHING, upper=SNAP, after=9)
    assert s.wants_read(in_flight=1, now=0.1, notified=never_notified)
    # A later page keeps the window's upper bound, not its own read's snapshot.
    s.read_done(rows(10, 11, 12), LATER_SNAP)
    assert s.window == Window(lower=EVERYTHING, upper=SNAP, after=12)


def test_after_a_short_read_the_next_window_starts_at_its_snapshot() -> None:
    s = state(batch_size=3)
    s.read_done(rows(4, 7, 9), SNAP)
    read = s.read_done(rows(13), LATER_SNAP)
    assert not read.full and not read.found_nothing
    assert s.window == Window(lower=SNAP)


def test_once_caught_up_it_reads_again_only_after_a_notification() -> None:
    s = state(batch_size=3)
    s.read_done(rows(4), SNAP)
    asked: list[bool] = []

    def notified(answer: bool) -> bool:
        asked.append(answer)
        return answer

    assert not s.wants_read(in_flight=0, now=0.1, notified=lambda: notified(False))
    assert s.wants_read(in_flight=0, now=0.1, notified=lambda: notified(True))
    assert asked == [False, True]


def test_it_reads_no_more_with_the_pipeline_full_or_the_poll_interval_over() -> None:
    s = state(now=10.0)
    assert not s.wants_read(in_flight=MAX_IN_FLIGHT, now=10.0, notified=never_notified)
    assert s.wants_read(
        in_flight=MAX_IN_FLIGHT - 1, now=10.0 + POLL - 0.01, notified=never_notified
    )
    assert not s.wants_read(in_flight=0, now=10.0 + POLL, notified=never_notified)


def test_only_an_empty_read_of_everything_pending_lets_the_loop_sleep() -> None:
    s = state(batch_size=3)
    assert s.read_done([], SNAP).found_nothing
    assert s.pipeline_empty(recording_failed=False, found_nothing=True).wait_for_notify
    # An empty read of a later window proves nothing about rows below it.
    s.start_over(now=1.0)
    s.read_done(rows(4), SNAP)
    assert not s.read_done([], LATER_SNAP).found_nothing
    # Nor does an iteration that did not read.
    assert not s.pipeline_empty(
        recording_failed=False, found_nothing=False
    ).wait_for_notify


def test_an_empty_pipeline_starts_over_from_everything_pending() -> None:
    s = state(batch_size=3, now=0.0)
    s.read_done(rows(4, 7, 9), SNAP)
    s.read_done(rows(13), LATER_SNAP)
    pause = s.pipeline_empty(recording_failed=False, found_nothing=False)
    assert pause.backoff is None
    s.start_over(now=5.0)
    assert s.window == Window() and not s.caught_up
    assert s.rescan_at == 5.0 + POLL
    assert s.wants_read(in_flight=0, now=5.0, notified=never_notified)


def test_a_failed_delivery_backs_off_doubling_to_the_cap_then_reads_it_all_again() -> (
    None
):
    s = state(max_backoff=2.0)
    s.read_done(rows(4), SNAP)
    assert [s.delivery_failed() for _ in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    s.start_over(now=3.0)
    assert s.window == Window() and not s.caught_up


def test_a_failed_recording_backs_off_too_and_a_clean_empty_pipeline_resets_it() -> (
    None
):
    s = state(max_backoff=2.0)
    assert s.delivery_failed() == 0.5
    pause = s.pipeline_empty(recording_failed=True, found_nothing=False)
    assert pause.backoff == 1.0 and not pause.wait_for_notify
    assert s.pipeline_empty(recording_failed=False, found_nothing=False).backoff is None
    assert s.delivery_failed() == 0.5, "the backoff did not start over"


@pytest.mark.parametrize("cap", [0.2, 0.5, 3.0, 10.0])
def test_the_backoff_never_exceeds_its_cap(cap: float) -> None:
    backoff = Backoff(cap)
    delays = [backoff.grow() for _ in range(60)]
    assert delays[0] == min(0.5, cap)
    assert max(delays) == cap
    assert delays == sorted(delays)


def test_reconnects_count_lost_sessions_in_a_row_and_a_healthy_one_resets_them() -> (
    None
):
    reconnects = Reconnects(cap=10.0)
    for expected in (1, 2, 3):
        reconnects.delay_after(0.1)
        assert reconnects.failures == expected
    assert reconnects.delay_after(HEALTHY_SESSION_SECONDS + 1) <= 0.5
    assert reconnects.failures == 1
