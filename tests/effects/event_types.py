"""Event types that exist only for the pipeline's tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from events.core.types import Event


@dataclass(frozen=True, kw_only=True)
class TestPinged(Event):
    """A ping whose fields tell the test handler how to behave."""

    __test__ = False  # not a pytest test class

    event_type: ClassVar[str] = "TestPinged"
    version: ClassVar[int] = 1
    stream: ClassVar[str] = "reservation"
    aggregate_type: ClassVar[str] = "test"

    ping_id: str
    n: int = 0
    key_id: str = ""
    # "ok", "fail" (always), "poison" (PoisonMessage), "flaky" (fails fail_times
    # first), "lose-db" (its database connection is cut the first fail_times times),
    # "deadlock" (PostgreSQL reports a deadlock the first fail_times times)
    mode: str = "ok"
    fail_times: int = 0
    sleep_ms: int = 0

    @property
    def aggregate_id(self) -> str:
        return self.key_id or self.ping_id


@dataclass(frozen=True, kw_only=True)
class TestOrdered(TestPinged):
    """The same, on another stream, for the handler that retries in place."""

    event_type: ClassVar[str] = "TestOrdered"
    stream: ClassVar[str] = "seat-hold-expired"


@dataclass(frozen=True, kw_only=True)
class TestBatched(TestPinged):
    """The same, for the batch handler (its own stream)."""

    event_type: ClassVar[str] = "TestBatched"
    stream: ClassVar[str] = "payment-complete"
