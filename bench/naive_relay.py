"""The naive outbox relay, as people first write one, and the writer-fed e2e protocol.

`NaiveRelay` is the baseline our relay must beat by ten times: every second it looks
for work; when there is some, it takes ONE row per transaction (`SELECT ... ORDER BY id
LIMIT 1 FOR UPDATE SKIP LOCKED`), produces it, waits for that message's acknowledgement
(`flush()`), deletes the row and commits; when the outbox is empty it sleeps 1 s. It
uses the project's producer (events.core.kafka.build_producer: idempotent, acks=all) and
builds each message exactly as our relay does (events.relay.sending.produce_row: key,
value and headers from the row), so consumers cannot tell the two apart and the only
difference measured is the relay's shape: one round trip to the broker and one commit
per event, and fixed polling instead of NOTIFY. Run it as its own process, as a relay
runs in production: `python -m bench.naive_relay` (Django set up from the environment:
DATABASE_URL, KAFKA_TOPIC_PREFIX).

Why the step measures what it does:
- Drain: a pre-filled outbox of 1 KB events (bench.relay._fill, the same rows our
  relay's drain benchmark uses), on a topic no consumer reads. The naive relay is
  slow, so the drain is bounded by time: the rate is the rows it deleted over a
  window, not the time to empty a fixed backlog.
- Latency, API-free: the same paced writer (bench.writer: the real reservation_create,
  one reservation and two events per transaction) at 100 and 1,000 reservations/s,
  with the real `run_consumers --concurrency 2` (as `make run`) consuming, and either
  the naive relay or our `relay_outbox` between them. Commit -> handler commit is read
  off PostgreSQL's clock (bench.dbclock). Each design gets topics and a consumer group
  of its own, so neither sees the other's messages. Where the naive relay cannot keep
  up, its backlog grows for the whole run and so does the latency: the figure is then
  a function of the run's length, and the reservations still unhandled at the bound
  are reported (`unsettled`) instead of waited for.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction

from events.core.kafka import Producer, build_producer
from events.relay.recorder import Outcome
from events.relay.sending import produce_row
from events.relay.sending import record_delivery as _record_delivery

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
NEXT_ROW_SQL = """
    SELECT id, topic, key, payload, headers::text
    FROM events_outboxevent
    WHERE parked_at IS NULL
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""
DELETE_SQL = "DELETE FROM events_outboxevent WHERE id = %s"


class NotAcknowledged(Exception):
    """The broker did not acknowledge the row: the transaction rolls back, it stays."""


class NaiveRelay:
    """One outbox row per transaction, acknowledged before the next; 1 s polling.

    Contract: at least once (a row is deleted only after its acknowledgement, in the
    transaction that locked it); blocks in `run()` until `stop()`; a failed send
    leaves the row and waits one poll interval.
    """

    def __init__(
        self, producer_factory: Callable[[], Producer] = build_producer
    ) -> None:
        self._producer = producer_factory()
        # Our relay's own message building, so both relays send the same bytes.
        self._produce = produce_row
        self._stopping = False
        self.sent = 0

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        while not self._stopping:
            try:
                sent = self._relay_one()
            except NotAcknowledged as exc:
                logger.warning("not acknowledged (%s); trying again in 1 s", exc)
                sent = False
            if sent:
                self.sent += 1
            else:
                time.sleep(POLL_SECONDS)
        self._producer.flush(10)

    @transaction.atomic
    def _relay_one(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(NEXT_ROW_SQL)
            row = cursor.fetchone()
            if row is None:
                return False
            outcomes: dict[int, Outcome] = {}
            on_delivery = functools.partial(_record_delivery, outcomes)
            self._produce(self._producer, outcomes, on_delivery, *row)
            self._producer.flush(30)
            error = outcomes[row[0]][0] if row[0] in outcomes else "no delivery report"
            if error is not None:
                raise NotAcknowledged(str(error))
            cursor.execute(DELETE_SQL, [row[0]])
        return True


def main() -> None:
    """`python -m bench.naive_relay`: relay until SIGTERM."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    django.setup()
    relay = NaiveRelay()
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    signal.signal(signal.SIGINT, lambda *_: relay.stop())
    relay.run()


def clear_orphans() -> int:
    """Delete bench outbox rows whose topic is gone; return how many.

    Earlier bench runs delete their topics; rows they left pending can never be
    delivered, and at the head of the outbox they would stall the naive relay (one row
    at a time, each timing out after 30 s) and slow ours. Only `bench-` topics are
    touched.
    """
    from events.core.kafka import build_admin

    existing = list(build_admin().list_topics(timeout=10).topics)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM events_outboxevent "
            "WHERE topic LIKE 'bench-%%' AND NOT (topic = ANY(%s))",
            [existing],
        )
        return cursor.rowcount


# -- processes ------------------------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[Any]:
    """Start a pipeline process in a session of its own.

    Its own process group, so a kill reaches the children too (`run_consumers
    --concurrency N` is a supervisor of N+1 processes).
    """
    from bench.harness import ROOT

    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def kill_groups(*processes: subprocess.Popen[Any]) -> None:
    """kill -9 each process and everything in its group, all first, then reap them.

    Only groups whose leader is not reaped yet: until then its pid (the group's id)
    cannot belong to anyone else. Calling it again is a no-op.
    """
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait()


def kill_group(process: subprocess.Popen[Any]) -> None:
    kill_groups(process)


def stop_group(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM (a clean stop; a supervisor stops its children), kill -9 on timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "process %d ignored SIGTERM for %.0f s", process.pid, timeout
            )
    kill_group(process)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the step's `finally` stops what it started.

    The processes above run in sessions of their own: nothing else would reach them
    if the step were terminated.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def pipeline_env(prefix: str) -> dict[str, str]:
    from bench.writer import HOLD_SECONDS

    return {
        **os.environ,
        "KAFKA_TOPIC_PREFIX": prefix,
        "RESERVATION_HOLD_SECONDS": str(HOLD_SECONDS),
    }


NAIVE_RELAY_ARGV = [sys.executable, "-m", "bench.naive_relay"]
OUR_RELAY_ARGV = [sys.executable, "manage.py", "relay_outbox"]


def consumers_argv(group: str) -> list[str]:
    return [
        sys.executable, "manage.py", "run_consumers",
        "--concurrency", "2", "--group", group,
    ]  # fmt: skip


# -- the step -------------------------------------------------------------------------


def _outbox_rows(topic: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM events_outboxevent WHERE topic = %s", [topic]
        )
        return int(cursor.fetchone()[0])


def drain(*, count: int, window: float) -> dict[str, Any]:
    """Rows/s the naive relay deletes from a pre-filled outbox of 1 KB events.

    The window starts at its first deletion (process start-up is not the relay's
    throughput) and ends after `window` seconds or when the outbox is empty.
    """
    from bench.relay import _fill
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    prefix = pipeline_settings().topic_prefix
    topic = f"{prefix}naive-drain-topic"
    create_topics([topic])
    _fill(count, topic)
    relay = spawn(NAIVE_RELAY_ARGV, pipeline_env(prefix))
    try:
        start_deadline = time.monotonic() + 60
        while (first := _outbox_rows(topic)) == count:
            if time.monotonic() > start_deadline or relay.poll() is not None:
                raise RuntimeError("the naive relay sent nothing in 60 s")
            time.sleep(0.05)
        started = time.perf_counter()
        end = started + window
        while (left := _outbox_rows(topic)) > 0 and time.perf_counter() < end:
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
    finally:
        stop_group(relay)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_outboxevent WHERE topic = %s", [topic])
    return {
        "events_per_s": round((first - left) / elapsed, 1),
        "filled": count,
        "drained_in_window": first - left,
        "window_s": round(elapsed, 2),
        "emptied": left == 0,
        "payload_bytes": 1000,
    }


def wait_ready(fixture: Any, *, timeout: float = 90.0) -> float:
    """Seconds until a few reservations went all the way through (relay, group join)."""
    from bench import writer
    from bench.dbclock import last_reservation_id

    started = time.monotonic()
    after_id = last_reservation_id()
    for user, seat_id in zip(fixture.users[:3], fixture.seat_ids[-3:], strict=True):
        writer.write_one(user, seat_id)
    if writer.wait_settled(after_id, timeout=timeout):
        raise RuntimeError(f"the pipeline handled nothing in {timeout:.0f} s")
    return round(time.monotonic() - started, 2)


def e2e(
    design: str, relay_argv: list[str], rates: dict[int, float], settle: float
) -> dict[str, Any]:
    """Commit -> handler commit through relay and consumers, per paced rate.

    Topics, group and processes are the design's own; the consumers start once and
    stay up for every rate, as they would in production.
    """
    from django.test import override_settings

    from bench import writer
    from bench.dbclock import last_reservation_id, reservation_latencies_ms
    from bench.harness import percentiles
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    prefix = f"{pipeline_settings().topic_prefix}{design}-"
    seats = sum(int(rate * duration) for rate, duration in rates.items()) + 10
    fixture = writer.make_fixture(f"e2e-{design}", seats)
    result: dict[str, Any] = {}
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        create_topics()
        env = pipeline_env(prefix)
        consumers = spawn(consumers_argv(f"{prefix}group"), env)
        relay = spawn(relay_argv, env)
        try:
            result["ready_s"] = wait_ready(fixture)
            offset = 0
            for rate, duration in rates.items():
                n = int(rate * duration)
                part = writer.Fixture(
                    fixture.performance_id,
                    fixture.seat_ids[offset : offset + n],
                    fixture.users,
                )
                offset += n
                after_id = last_reservation_id()
                written = writer.paced(
                    part, rate=rate, seconds=duration, threads=writer.threads_for(rate)
                )
                unsettled = writer.wait_settled(after_id, timeout=settle)
                result[f"rate_{rate}"] = {
                    **percentiles(reservation_latencies_ms(after_id)),
                    "target_rate": rate,
                    "achieved_rate": round(written.achieved_rate, 1),
                    "writers": writer.threads_for(rate),
                    "write_errors": written.errors,
                    "unsettled": unsettled,
                }
        finally:
            stop_group(relay)
            stop_group(consumers)
        with connection.cursor() as cursor:
            # A relay that could not keep up leaves rows; the next design must not
            # spend its run sending them to topics nobody reads.
            cursor.execute(
                "DELETE FROM events_outboxevent WHERE topic LIKE %s", [f"{prefix}%"]
            )
            result["left_in_outbox"] = cursor.rowcount
    return result


def run() -> dict[str, object]:
    """Step `naive_relay:run`: the naive relay's drain, and e2e latency of both relays
    behind the same paced writer."""
    from bench import writer
    from bench.dbclock import require_commit_timestamps
    from bench.harness import scaled, seconds
    from bench.setup import delete_topics
    from events.core.conf import pipeline_settings

    exit_on_sigterm()
    require_commit_timestamps()
    writer.long_holds()
    writer.size_pool(writer.threads_for(1000) + 2)
    prefix = pipeline_settings().topic_prefix
    orphans = clear_orphans()
    rates = {100: seconds(10), 1000: seconds(6)}
    settle = seconds(40, minimum=15)
    try:
        drained = drain(count=scaled(20_000, minimum=1000), window=seconds(20))
        naive = e2e("naive", NAIVE_RELAY_ARGV, rates, settle)
        ours = e2e("ours", OUR_RELAY_ARGV, rates, settle)
    finally:
        delete_topics(prefix)
    return {
        "naive_relay_drain_events_per_s": drained["events_per_s"],
        "naive_e2e_latency_ms": naive,
        "pipeline_writer_e2e_latency_ms": ours,
        "naive_relay": {
            "drain": drained,
            "design": (
                "one outbox row per transaction (SELECT ... LIMIT 1 FOR UPDATE SKIP "
                "LOCKED), produce + flush, delete, commit; 1 s sleep when empty"
            ),
            "e2e_protocol": (
                "paced reservation_create writer threads in the step process; the "
                "relay as its own process; run_consumers --concurrency 2; commit -> "
                "SeatReserved handler commit on PostgreSQL's clock"
            ),
            "orphan_outbox_rows_deleted": orphans,
        },
    }


if __name__ == "__main__":
    main()
