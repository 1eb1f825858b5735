"""Who sends: leading shards, waiting as a hot standby, and reconnecting after a loss.

A relay leads a shard by holding a PostgreSQL session advisory lock (events.relay.
shards); the others wait for it. PostgreSQL frees the lock when the leader's session
ends (a crash, a restart, a cut connection), so a standby takes over within one poll
interval and nothing needs to detect the leader's death.
"""

from __future__ import annotations

import logging
import random
import threading

from events.observability import metrics
from events.relay.shard_lock_keys import LEGACY_LEADER_LOCK
from events.relay.shards import ShardClaims

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")

# The leader lock with one shard (the default): the lock of shard 0.
RELAY_LOCK_KEY = LEGACY_LEADER_LOCK
# A session that lasted this long was healthy: its loss starts the backoff over.
HEALTHY_SESSION_SECONDS = 30.0


def reconnect_delay(failures: int, *, cap: float, base: float = 0.5) -> float:
    """Seconds to wait before connecting again: doubling, capped, with full jitter,
    so relays that lost the database together do not all come back at once."""
    # The exponent is bounded: after a day without a database, 2 ** failures would
    # overflow a float.
    return random.uniform(base / 2, min(cap, base * 2 ** min(failures - 1, 16)))


class Reconnects:
    """Count the sessions lost in a row, to space out the attempts to connect again."""

    def __init__(self, *, cap: float) -> None:
        self.cap = cap
        self.failures = 0

    def delay_after(self, session_seconds: float) -> float:
        """Seconds to wait after a session of `session_seconds` was lost."""
        healthy = session_seconds > HEALTHY_SESSION_SECONDS
        self.failures = 1 if healthy else self.failures + 1
        return reconnect_delay(self.failures, cap=self.cap)


def wait_for_shards(
    claims: ShardClaims, *, poll_interval: float, stop: threading.Event
) -> bool:
    """Claim this relay's share of the shards, waiting as a standby while other relays
    lead them all.

    Return False if `stop` was set first. The locks last as long as the session of the
    claims' connection.
    """
    announced = False
    while not stop.is_set():
        claims.settle()
        metrics.RELAY_SHARDS_LED.set(len(claims.held))
        if claims.held:
            metrics.RELAY_IS_LEADER.set(1)
            logger.info(
                "relay is the leader%s; sending outbox rows", claims.filter().describe()
            )
            return True
        metrics.RELAY_IS_LEADER.set(0)
        # A standby is alive too: its heartbeat tells a health check so.
        metrics.RELAY_HEARTBEAT.set_to_current_time()
        if not announced:
            logger.info("another relay is the leader; waiting as a hot standby")
            announced = True
        stop.wait(poll_interval)
    return False
