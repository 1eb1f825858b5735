"""Where a failed event goes next: a retry topic, a retry in place, or its DLQ.

Pure: the decision depends only on the failure's class, the handler's retry mode and
policy, the attempt and the topics the stream has, so every branch is unit-tested
without a broker.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from events.core.conf import RetryPolicy
from events.core.registry import RetryMode


class RouteKind(enum.Enum):
    DEAD_LETTER = "dead-letter"
    RETRY_TOPIC = "retry-topic"
    RETRY_IN_PLACE = "retry-in-place"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    topic: str | None = None  # the retry topic (RETRY_TOPIC only)
    delay_ms: int = 0  # how long until the next attempt (not for DEAD_LETTER)

    @property
    def dead_letter(self) -> bool:
        return self.kind is RouteKind.DEAD_LETTER


DEAD_LETTER = Route(RouteKind.DEAD_LETTER)


def route(
    *,
    retryable: bool,
    mode: RetryMode,
    attempt: int,
    policy: RetryPolicy,
    retry_topics: Sequence[str],
) -> Route:
    """The next step for a unit whose attempt `attempt` (1-based) just failed.

    The due time of a retry travels in a header, so any retry topic can hold any delay;
    a policy with more attempts than there are retry topics reuses the last one.
    """
    if not retryable or attempt >= policy.attempts:
        return DEAD_LETTER
    delay_ms = policy.delay_ms(attempt)
    if mode is RetryMode.BLOCKING:
        return Route(RouteKind.RETRY_IN_PLACE, delay_ms=delay_ms)
    if not retry_topics:
        return DEAD_LETTER
    topic = retry_topics[min(attempt, len(retry_topics)) - 1]
    return Route(RouteKind.RETRY_TOPIC, topic=topic, delay_ms=delay_ms)
