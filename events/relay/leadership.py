"""Who sends: the leader lock, waiting as a hot standby, and reconnecting after a loss.

One relay leads by holding a PostgreSQL session advisory lock; the others wait for it.
PostgreSQL frees the lock when the leader's session ends (a crash, a restart, a cut
connection), so a standby takes over within one poll interval and nothing needs to
detect the leader's death.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import psycopg

from events.observability import metrics

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")

RELAY_LOCK_KEY = (7_002, 0)
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


def wait_for_leadership(
    conn: psycopg.Connection[Any], *, poll_interval: float, stop: threading.Event
) -> bool:
    """Take the leader lock on `conn`, waiting as a standby while another relay has it.

    Return False if `stop` was set first. The lock lasts as long as `conn`'s session.
    """
    announced = False
    while not stop.is_set():
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", RELAY_LOCK_KEY
        ).fetchone()
        if row and row[0]:
            metrics.RELAY_IS_LEADER.set(1)
            logger.info("relay is the leader; sending outbox rows")
            return True
        # A standby is alive too: its heartbeat tells a health check so.
        metrics.RELAY_HEARTBEAT.set_to_current_time()
        if not announced:
            logger.info("another relay is the leader; waiting as a hot standby")
            announced = True
        stop.wait(poll_interval)
    return False
