"""Event types that exist only for the pipeline's tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from events.types import Event


@dataclass(frozen=True, kw_only=True)
class TestPinged(Event):
    __test__ = False  # not a pytest test class

    event_type: ClassVar[str] = "TestPinged"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "reservation"
    aggregate_type: ClassVar[str] = "test"

    ping_id: str
    n: int = 0

    @property
    def aggregate_id(self) -> str:
        return self.ping_id
