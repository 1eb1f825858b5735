"""The flaky handler: a transient error with probability p per attempt, else nothing.

The runner passes a handler the event only, not the attempt number. The attempt is
read from the runner's own record of failures (FailedAttempt, one row per failed
attempt, committed right after the failure, long before the retry is due): the last
recorded attempt + 1. The step checks this against the attempt the runner wrote
into each successful event's inbox row.
"""

from __future__ import annotations

from django.db.models import Max

from bench.flaky import HANDLER_NAME
from bench.flaky.chance import fails
from bench.flaky.event_types import FlakyPinged
from events.consumer.dispatch import current_event_id
from events.core.registry import handler
from events.models import FailedAttempt


def _attempt() -> int:
    last = FailedAttempt.objects.filter(
        event_id=current_event_id(), handler=HANDLER_NAME
    ).aggregate(last=Max("attempt"))["last"]
    return (last or 0) + 1


@handler("reservation", events=[FlakyPinged], name=HANDLER_NAME)
def fail_sometimes(event: FlakyPinged) -> None:
    """Raise ConnectionError (transient: retried) on the attempts the hash picks."""
    attempt = _attempt()
    if fails(seed=event.seed, seq=event.seq, attempt=attempt, p=event.p):
        raise ConnectionError(f"bench: event {event.seq} fails attempt {attempt}")
