"""Running a batch's units: optimistic runs, split at the first failure.

Optimistic runs cover as many units as possible in one transaction. A failure rolls
the run back; the units before the failed one are run again, the failed one is dealt
with alone (its failure is remembered, never re-provoked). A failed batch-handler call
does not say which event failed: the run is repeated without batch handlers, which
finds it. Pure control flow: the transaction work and the failure policy are passed in,
so the splitting is unit-tested with fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from events.consumer.units import Unit


@dataclass(frozen=True)
class Failure:
    index: int | None  # None: a batch call failed, the culprit is not known yet
    error: BaseException


class RunUnits(Protocol):
    def __call__(self, units: list[Unit], *, batches: bool = True) -> Failure | None:
        """Run `units` in one transaction; on the first failure roll back, report it."""
        ...


# Deal with one failed unit; False if the batch must stop at it.
OnFailure = Callable[[Unit, BaseException], bool]


def execute(
    units: list[Unit],
    *,
    run: RunUnits,
    on_failure: OnFailure,
    mark_done: Callable[[list[Unit]], None],
    stopping: Callable[[], bool],
) -> int | None:
    """Run the units in order; return the index where it had to stop, or None."""
    known: dict[int, BaseException] = {}
    singly_until = 0  # units before this index run without batch handlers
    i = 0
    while i < len(units):
        if stopping():
            return i
        if i in known:
            unit, error = units[i], known.pop(i)
            if not on_failure(unit, error):
                return i
            mark_done([unit])
            i += 1
            continue
        end = min((k for k in known if k > i), default=len(units))
        failure = run(units[i:end], batches=i >= singly_until)
        if failure is None:
            mark_done(units[i:end])
            i = end
        elif failure.index is None:
            singly_until = end
        else:
            known[i + failure.index] = failure.error
    return None
