"""The consumer's clock, replaceable in tests.

Everything in the consumer that depends on time (retry due times, pauses, the storm
guard's window, lag reports, the in-place backoff's wait) asks a `Clock`, so a test can
drive those paths with a `ManualClock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds (compared with due times carried in headers)."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals (never goes back)."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` unless `stop` is set; return whether it is set."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds)


class ManualClock:
    """A clock that moves only when told to (or when something waits on it)."""

    def __init__(self, *, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms
        self._monotonic = 1000.0

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now_ms += int(seconds * 1000)
        self._monotonic += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if not stop.is_set():
            self.advance(seconds)
        return stop.is_set()


SYSTEM_CLOCK = SystemClock()
