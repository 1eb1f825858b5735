"""Loss on crash: kill -9 between a business commit and its handler, for both designs.

The report's case against in-process events is what a crash does to them: an event
whose transaction committed but whose after-commit listener had not finished exists
nowhere else, so its effect never happens. The outbox claims the opposite: the event
committed with the change, so a relay and consumers killed at the same instant, once
restarted, still carry it to its handler. This step tries both claims many times.

Protocol, per trial (the same for both designs):
- A child process (bench.crash_child) reserves seats one transaction at a time and
  prints each reservation's id right after its commit. The parent reads the ids and,
  right after reading the k-th (k drawn from a seeded generator, in a small range),
  sends SIGKILL. Killing just after a commit is killing "after the business
  transaction commits and before its handler ran" for the events most recently
  committed; the ones a few commits earlier test handlers caught mid-way.
- before: the child's handlers run on its own thread pool; the kill takes them down
  with it. Nothing restarts them: there is nothing to restart from.
- ours: in the same instant the parent also kill -9s the relay (relay_outbox) and
  the consumers (run_consumers --concurrency 2, the whole process group), then
  restarts both and waits, bounded, until every committed reservation is RESERVED.
  Relay and consumers stay up between trials and are killed in every trial: crashing
  a process that has been running is the case that matters, and a fresh group join
  per trial would cost the time budget without testing more.
- Counted from the database, not from what the parent read: every reservation of the
  trial that committed (its id may not have been printed before the kill) and those
  still PENDING after settling, i.e. effects that never happened. A reservation whose
  transaction the kill interrupted never committed and is not counted.
`pending_at_kill` (PENDING just after the kill, before anything restarts) shows the
kills did land while effects were outstanding.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

from django.db import connection

from bench import naive_relay, writer
from bench.dbclock import last_reservation_id, require_commit_timestamps
from bench.harness import ROOT, rng, scaled

logger = logging.getLogger(__name__)

K_RANGE = (10, 120)
# What one child may write: more than the largest k, so it is always killed mid-run.
CHILD_LIMIT = 400
SETTLE_TIMEOUT = 60.0


@dataclass
class Trial:
    k: int
    committed: int
    pending_at_kill: int
    lost: int
    settle_s: float
    settled: bool


class Child:
    """A crash_child started ahead of its trial; `go` starts its writes."""

    def __init__(self, design: str, performance_id: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.crash_child", design, str(performance_id),
             str(CHILD_LIMIT)],
            cwd=ROOT,
            env=naive_relay.pipeline_env(os.environ["KAFKA_TOPIC_PREFIX"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip

    def _line(self) -> str:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            status = self.process.wait()
            raise RuntimeError(f"crash child exited ({status}) before it was killed")
        return line.strip()

    def _expect(self, word: str) -> None:
        line = self._line()
        if line != word:
            raise RuntimeError(f"crash child said {line!r}, expected {word!r}")

    def go(self) -> None:
        """Wait until it is set up, then let it write."""
        self._expect("ready")
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def read_commits(self, k: int) -> None:
        """Return right after reading the k-th committed id."""
        for _ in range(k):
            int(self._line())

    def kill(self) -> None:
        """kill -9 and reap it (again: a no-op)."""
        naive_relay.kill_group(self.process)
        self.close()

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


class Pipeline:
    """relay_outbox and run_consumers --concurrency 2, as `make run` starts them."""

    def __init__(self, group: str) -> None:
        self.env = naive_relay.pipeline_env(os.environ["KAFKA_TOPIC_PREFIX"])
        self.group = group
        self.relay: subprocess.Popen[Any] | None = None
        self.consumers: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.consumers = naive_relay.spawn(
            naive_relay.consumers_argv(self.group), self.env
        )
        self.relay = naive_relay.spawn(naive_relay.OUR_RELAY_ARGV, self.env)

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        return [p for p in (self.relay, self.consumers) if p is not None]

    def kill(self) -> None:
        naive_relay.kill_groups(*self.processes)

    def stop(self) -> None:
        for process in self.processes:
            naive_relay.stop_group(process)


def _counts(after_id: int) -> tuple[int, int]:
    """Committed reservations after `after_id`, and how many are still PENDING."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'PENDING') "
            "FROM reservations_reservation WHERE id > %s",
            [after_id],
        )
        total, pending = cursor.fetchone()
    return int(total), int(pending)


def kill(child: Child, k: int, pipeline: Pipeline | None) -> int:
    """Let the child commit k reservations, then kill -9 it (and, for ours, relay and
    consumers) at once; return the last reservation id from before its writes."""
    after_id = last_reservation_id()
    child.go()
    child.read_commits(k)
    # One instant for all: every SIGKILL is sent before any process is reaped.
    naive_relay.kill_groups(child.process, *(pipeline.processes if pipeline else []))
    child.close()
    return after_id


def settle(after_id: int, k: int, pipeline: Pipeline | None) -> Trial:
    """Count what the kill left undone and, for ours, what stays undone after restart."""
    # Let PostgreSQL finish what the dead clients had already sent (a COMMIT in flight).
    time.sleep(0.2)
    _, pending_at_kill = _counts(after_id)
    started = time.monotonic()
    if pipeline is not None:
        pipeline.start()
        writer.wait_settled(after_id, timeout=SETTLE_TIMEOUT)
    committed, lost = _counts(after_id)
    return Trial(
        k=k,
        committed=committed,
        pending_at_kill=pending_at_kill,
        lost=lost,
        settle_s=round(time.monotonic() - started, 2),
        settled=lost == 0,
    )


def trials(design: str, count: int, pipeline: Pipeline | None) -> list[Trial]:
    """`count` trials; the next child sets Django up while the last kill settles."""
    ks = rng(f"crash:{design}")
    fixture = writer.make_fixture(f"crash-{design}", count * CHILD_LIMIT)
    done: list[Trial] = []
    children = [Child(design, fixture.performance_id)]
    try:
        for n in range(count):
            k = ks.randint(*K_RANGE)
            after_id = kill(children[-1], k, pipeline)
            if n + 1 < count:
                children.append(Child(design, fixture.performance_id))
            done.append(settle(after_id, k, pipeline))
            logger.warning("crash %s trial %d: %s", design, n + 1, done[-1])
    finally:
        for child in children:
            child.kill()
    return done


def summary(done: list[Trial]) -> dict[str, Any]:
    committed = sum(t.committed for t in done)
    lost = sum(t.lost for t in done)
    return {
        "trials": len(done),
        "committed_before_kills": committed,
        "pending_at_kill": sum(t.pending_at_kill for t in done),
        "lost": lost,
        "lost_share": round(lost / committed, 4) if committed else None,
        "trials_with_loss": sum(1 for t in done if t.lost),
        "per_trial": [asdict(t) for t in done],
    }


def ours_trials(count: int) -> list[Trial]:
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    create_topics()
    pipeline = Pipeline(f"{pipeline_settings().topic_prefix}crash-group")
    pipeline.start()
    try:
        naive_relay.wait_ready(writer.make_fixture("crash-ready", 3))
        return trials("ours", count, pipeline)
    finally:
        pipeline.stop()


def run() -> dict[str, object]:
    """Step `crash:run`: trials per design, effects lost to kill -9."""
    from bench.setup import delete_topics
    from events.core.conf import pipeline_settings

    naive_relay.exit_on_sigterm()
    require_commit_timestamps()
    writer.long_holds()
    count = scaled(12, minimum=2)
    started = time.monotonic()
    orphans = naive_relay.clear_orphans()
    try:
        before = summary(trials("before", count, None))
        before_s = time.monotonic() - started
        ours = summary(ours_trials(count))
    finally:
        delete_topics(pipeline_settings().topic_prefix)
    return {
        "crash_trials": count,
        "lost_on_crash": ours["lost"],
        "before_design": {
            "lost_on_crash": before["lost"],
            "crash_committed_before_kills": before["committed_before_kills"],
            "crash_lost_share": before["lost_share"],
        },
        "crash": {
            "k_range": list(K_RANGE),
            "ours": {
                **ours,
                "seconds": round(time.monotonic() - started - before_s, 1),
            },
            "before_design": {**before, "seconds": round(before_s, 1)},
            "orphan_outbox_rows_deleted": orphans,
        },
    }
