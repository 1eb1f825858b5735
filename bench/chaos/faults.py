"""The seeded fault injector: one fault at a time, at random moments.

Every fault is recorded with when it started and when the faulty part was back (for a
kill: the kill itself; the supervisors do the restarting), so the checker can say how
long the pipeline took to catch up after each.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.database import ChaosPostgres
from bench.chaos.stack import Brokers, Stack

logger = logging.getLogger("bench.chaos")

KINDS = (
    "relay_kill",
    "relay_kill_draining",
    "consumer_kill",
    "broker_kill",
    "broker_stop",
    "postgres_restart",
    "poison",
)


@dataclass
class Fault:
    kind: str
    started: float
    restored: float
    detail: str = ""
    # Seconds from `restored` until every event committed before it was handled;
    # None if that took longer than the injector waits (RECOVERY_LIMIT_S).
    recovered_s: float | None = None


# Events committed this long after a fault ends must also be handled for it to count
# as recovered.
PROBE_S = 0.5
# How long the injector waits for the pipeline to catch up before the next fault.
RECOVERY_LIMIT_S = 120.0
# Events committed up to a moment and not yet handled: in the commit log (see
# bench/chaos/database.py) without an inbox row. Only the last few minutes are looked at
# (the verdict looks at all of them), so the query stays small.
BEHIND_SQL = """
    SELECT EXISTS (
        SELECT 1 FROM chaos_commit_log c
        WHERE c.created_at <= to_timestamp(%(t)s)
            AND c.created_at > to_timestamp(%(t)s) - interval '10 minutes'
            AND NOT EXISTS (
                SELECT 1 FROM events_inboxentry i WHERE i.event_id = c.event_id
            )
    )
"""


@dataclass
class Injector:
    stack: Stack
    brokers: Brokers
    postgres: ChaosPostgres
    rng: random.Random
    count: int
    kinds: tuple[str, ...] = KINDS
    gap: tuple[float, float] = (1.5, 4.0)
    poison_topics: list[str] = field(default_factory=list)
    database_url: str = ""
    faults: list[Fault] = field(default_factory=list)
    poison_sent: list[tuple[str, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="faults", daemon=True)
        thread.start()
        return thread

    def plan(self) -> list[str]:
        """`count` kinds, each as often as the others, in a seeded order."""
        kinds = [self.kinds[i % len(self.kinds)] for i in range(self.count)]
        self.rng.shuffle(kinds)
        return kinds

    def _run(self) -> None:
        try:
            for kind in self.plan():
                time.sleep(self.rng.uniform(*self.gap))
                started = time.time()
                detail = self._inject(kind)
                fault = Fault(kind, started, time.time(), detail)
                fault.recovered_s = self._wait_for_recovery(fault.restored)
                self.faults.append(fault)
                logger.info(
                    "fault %s (%s): %.1f s, caught up %s s after",
                    kind,
                    detail,
                    fault.restored - started,
                    fault.recovered_s,
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.error = exc
            logger.exception("fault injector failed")
        finally:
            self.done.set()

    def _wait_for_recovery(self, restored: float) -> float | None:
        """Seconds from `restored` until everything committed up to PROBE_S after it
        was handled: events that came right after a kill, onto the killed consumer's
        partitions or into a relay's takeover, count too."""
        import psycopg

        time.sleep(max(0.0, restored + PROBE_S - time.time()))
        probe = restored + PROBE_S
        conn = None
        deadline = time.time() + RECOVERY_LIMIT_S
        while time.time() < deadline:
            try:
                conn = conn or psycopg.connect(self.database_url, autocommit=True)
                (behind,) = conn.execute(BEHIND_SQL, {"t": probe}).fetchone()
                if not behind:
                    conn.close()
                    return round(time.time() - restored, 2)
            except psycopg.Error:
                conn = None  # the database restarting: ask again
            time.sleep(0.1)
        return None

    def _inject(self, kind: str) -> str:
        action: Callable[[], str] = getattr(self, f"_{kind}")
        return action()

    def _victim(self, live: list[Any]) -> Any:
        """The relay the flow depends on if there is one (the CDC task's worker),
        else any live one (drawn either way, so a seed gives the same schedule)."""
        drawn = self.rng.choice(live)
        return self.stack.busiest_relay() or drawn

    def _relay_kill(self) -> str:
        relay = self._victim(self.stack.live_relays())
        relay.send_signal(signal.SIGKILL)
        return f"pid {relay.pid}"

    def _relay_kill_draining(self) -> str:
        """Freeze the relays while the backlog grows, let one drain, kill it mid-way."""
        live = self.stack.live_relays()
        victim = self._victim(live)
        try:
            for relay in live:
                relay.send_signal(signal.SIGSTOP)
            time.sleep(self.rng.uniform(2.0, 4.0))
        finally:
            # Every relay thawed whatever happened: one left frozen would stall the
            # rest of the run. (send_signal does nothing to a process already reaped.)
            for relay in live:
                if relay is not victim:
                    relay.send_signal(signal.SIGCONT)
            victim.send_signal(signal.SIGCONT)
        time.sleep(self.rng.uniform(0.005, 0.08))
        victim.send_signal(signal.SIGKILL)
        return f"pid {victim.pid}"

    def _consumer_kill(self) -> str:
        children = self.stack.consumer_children()
        if not children:
            return "no child to kill"
        pid = self.rng.choice(children)
        os.kill(pid, signal.SIGKILL)
        return f"pid {pid}"

    def _broker_kill(self) -> str:
        node = self.rng.randint(1, self.brokers.nodes)
        self.brokers.kill(node)
        time.sleep(self.rng.uniform(1.0, 4.0))
        self.brokers.revive(node)
        return f"node {node}"

    def _broker_stop(self) -> str:
        node = self.rng.randint(1, self.brokers.nodes)
        self.brokers.halt(node)
        time.sleep(self.rng.uniform(1.0, 4.0))
        self.brokers.revive(node)
        return f"node {node}"

    def _postgres_restart(self) -> str:
        self.postgres.restart()
        return ""

    def _poison(self) -> str:
        """Messages no handler can take, straight onto the main topics."""
        from events.core.kafka import build_producer

        producer = build_producer()
        bodies = [
            b"{not json",
            json.dumps({"type": "NoSuchEvent", "version": 1}).encode(),
            json.dumps(
                {
                    "id": "01890000-0000-7000-8000-000000000000",
                    "type": "SeatReserved",
                    "version": 1,
                    "occurred_at": "2026-12-01T00:00:00+00:00",
                    "aggregate_type": "seat",
                    "aggregate_id": "x",
                    "data": {"seat_id": "not a number"},
                }
            ).encode(),
        ]
        for body in bodies:
            topic = self.rng.choice(self.poison_topics)
            key = f"poison-{len(self.poison_sent)}"
            producer.produce(topic, key=key.encode(), value=body)
            self.poison_sent.append((topic, key))
        remaining = producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} poison messages not acknowledged")
        return f"{len(bodies)} messages"
