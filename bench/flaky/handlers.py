"""The flaky handler: a transient error with probability p per attempt, else nothing.

The attempt number comes with the delivery; the step checks the outcome against the
attempt the runner wrote into each successful event's inbox row.
"""

from __future__ import annotations

from bench.flaky import HANDLER_NAME
from bench.flaky.chance import fails
from bench.flaky.event_types import FlakyPinged
from events.core.delivery import Delivery
from events.core.registry import handler


@handler("reservation", events=[FlakyPinged], name=HANDLER_NAME)
def fail_sometimes(delivery: Delivery[FlakyPinged]) -> None:
    """Raise ConnectionError (transient: retried) on the attempts the hash picks."""
    event, attempt = delivery.event, delivery.attempt
    if fails(seed=event.seed, seq=event.seq, attempt=attempt, p=event.p):
        raise ConnectionError(f"bench: event {event.seq} fails attempt {attempt}")
