"""What the relay loop carries from one iteration to the next, and the rules that move it.

Pure: no database, no broker, no clock of its own (callers pass `now`), so each rule
can be tested alone (tests/events/test_relay_loop_state.py). The loop
(events.relay.pipeline) asks it what to do and tells it what happened:

- `wants_read`: read only with room in the pipeline (MAX_IN_FLIGHT), within the poll
  interval that began at the last start-over, and, once a read came back short, only
  when a commit has notified: a read from an early snapshot walks the pending index
  from its start, so it is not repeated for nothing.
- `read_done`: a full batch pages on in the same window (more is likely waiting); a
  short one ends the window and the next window starts at that read's snapshot.
- `delivery_failed` / `pipeline_empty`: the backoff doubles from 0.5 s up to its cap
  after each failure and starts over once the pipeline empties cleanly; an empty
  pipeline sleeps only after a read of everything pending found nothing.
- `start_over`: after a failure or an empty pipeline, read everything pending again,
  which picks up rows whose delivery failed or that were un-parked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from events.relay.window import Row, Window

# Batches produced but not yet recorded: enough to overlap the database with Kafka.
MAX_IN_FLIGHT = 3
BACKOFF_START = 0.5


class Backoff:
    """The pause before sending again after a failure: doubling, capped."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.seconds = 0.0

    def grow(self) -> float:
        """Seconds to pause after one more failure in a row."""
        self.seconds = min(max(self.seconds * 2, BACKOFF_START), self.cap)
        return self.seconds

    def reset(self) -> None:
        self.seconds = 0.0


@dataclass(frozen=True)
class Read:
    """What one read means for the loop."""

    # The batch was full: produce it and read on at once, without waiting.
    full: bool
    # A read of everything pending found nothing: the loop may sleep.
    found_nothing: bool


@dataclass(frozen=True)
class Pause:
    """What the loop does once its pipeline is empty, before it starts over."""

    # Seconds to back off first (recording failed), or None.
    backoff: float | None
    # Sleep until a NOTIFY or the poll interval, whichever comes first.
    wait_for_notify: bool


class LoopState:
    """The read position and the timers of one leader session's loop."""

    def __init__(
        self, *, batch_size: int, poll_interval: float, max_backoff: float, now: float
    ) -> None:
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff = Backoff(max_backoff)
        self.window = Window()
        self.caught_up = False
        self.rescan_at = now + poll_interval

    def wants_read(
        self, *, in_flight: int, now: float, notified: Callable[[], bool]
    ) -> bool:
        """Whether to read now; `notified` is asked only once caught up."""
        return (
            in_flight < MAX_IN_FLIGHT
            and now < self.rescan_at
            and (not self.caught_up or notified())
        )

    def read_done(self, rows: list[Row], snapshot: str) -> Read:
        """Move the window past a read of `self.window` that returned `rows`."""
        read = self.window
        full = len(rows) == self.batch_size
        self.caught_up = not full
        self.window = read.next(rows, snapshot, full)
        return Read(full=full, found_nothing=not rows and read.from_the_start)

    def delivery_failed(self) -> float:
        """Seconds to back off after the broker failed to take rows."""
        return self.backoff.grow()

    def pipeline_empty(self, *, recording_failed: bool, found_nothing: bool) -> Pause:
        """What to do now that everything produced is recorded.

        `found_nothing` is this iteration's read's (False if it did not read).
        """
        if recording_failed:
            return Pause(backoff=self.backoff.grow(), wait_for_notify=found_nothing)
        self.backoff.reset()
        return Pause(backoff=None, wait_for_notify=found_nothing)

    def start_over(self, now: float) -> None:
        """Read everything pending again, for another poll interval from `now`."""
        self.window = Window()
        self.caught_up = False
        self.rescan_at = now + self.poll_interval
