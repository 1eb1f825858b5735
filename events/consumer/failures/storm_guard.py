"""A brake for dead-letter storms (the idea of arroyo's DlqLimit).

A bad deploy can make every event fail; without a brake the consumer would empty its
topics into the DLQs at full speed. The guard allows at most `max_dead_letters` in any
`window_seconds`; past that, the consumer pauses instead of dead-lettering.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class DeadLetterRateGuard:
    def __init__(
        self,
        *,
        max_dead_letters: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_dead_letters < 1 or window_seconds <= 0:
            raise ValueError("the guard needs a positive limit and window")
        self.max_dead_letters = max_dead_letters
        self.window_seconds = window_seconds
        self._clock = clock
        self._times: deque[float] = deque()

    def try_acquire(self) -> bool:
        """Count one dead letter if the rate allows it; return False if it does not."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.window_seconds:
            self._times.popleft()
        if len(self._times) >= self.max_dead_letters:
            return False
        self._times.append(now)
        return True
