"""The event the flaky handler takes: what it needs to decide, carried in the event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from events.core.types import Event


@dataclass(frozen=True, kw_only=True)
class FlakyPinged(Event):
    """Event `seq` of a bench run whose handler fails each attempt with chance `p`.

    `seed` and `seq` (not the event id, which is a new UUIDv7 each run, as the inbox
    needs) make the failures the same on every run with the same seed.
    """

    event_type: ClassVar[str] = "BenchFlakyPinged"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "reservation"
    aggregate_type: ClassVar[str] = "bench"

    seq: int
    p: float
    seed: str

    @property
    def aggregate_id(self) -> str:
        return str(self.seq)
