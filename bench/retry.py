"""Step `retry:run`: how many transiently failing events the retries save, against theory.

Through the real pipeline: events on a real topic, a real `run_consumers` (with
bench/settings.py, which installs the bench.flaky handler), the real retry topics
with their due-time pauses, the real DLQ topic and dead-letter store. The handler
fails each attempt with probability p, decided by a seeded hash of (event number,
attempt), so the failures are independent per attempt and the same on every run.

In this codebase `RetryPolicy.attempts` counts deliveries, the first included:
ConsumerRunner dead-letters a failure when `attempt >= attempts`, and there are
`attempts - 1` retry topics. With EVENTS_RETRY_ATTEMPTS=3 an event succeeds unless all
three deliveries fail: the success share is 1 - p^3.

Because the hash decides, the bench also knows each event's exact outcome in advance:
every event must end as predicted (a success at the predicted attempt, or a dead
letter); anything else is the pipeline's error, not chance.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import orjson
from django.db import connection

from bench.consumer import consumer_env, own_topics
from bench.flaky import HANDLER_NAME
from bench.flaky.chance import first_success
from bench.harness import SEED, scaled

PROBABILITIES = (0.1, 0.3, 0.5)
BACKOFF_MS = 50
STALL_SECONDS = 30.0


@dataclass
class Produced:
    """The run's events: their ids (in order) and each id's event number."""

    seq_of: dict[uuid.UUID, int]

    @property
    def id_range(self) -> tuple[uuid.UUID, uuid.UUID]:
        return min(self.seq_of), max(self.seq_of)


def _produce(count: int, p: float, seed: str) -> Produced:
    from bench.flaky.event_types import FlakyPinged
    from events.core.conf import pipeline_settings
    from events.core.kafka import build_producer
    from events.core.types import new_event_id

    topic = pipeline_settings().topic("reservation")
    producer = build_producer()
    now = datetime.now(UTC)
    seq_of: dict[uuid.UUID, int] = {}
    for seq in range(count):
        event = FlakyPinged(seq=seq, p=p, seed=seed)
        event_id = new_event_id()
        seq_of[event_id] = seq
        while True:
            try:
                producer.produce(
                    topic,
                    key=event.key.encode(),
                    value=orjson.dumps(
                        event.envelope(event_id=event_id, occurred_at=now)
                    ),
                    headers=[("event_id", str(event_id).encode())],
                )
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    return Produced(seq_of)


def _succeeded(produced: Produced) -> dict[uuid.UUID, int]:
    """Inbox rows of the flaky handler for this run's events: event id -> attempt."""
    low, high = produced.id_range
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, attempt FROM events_inboxentry "
            "WHERE handler = %s AND event_id BETWEEN %s AND %s",
            [HANDLER_NAME, low, high],
        )
        return dict(cursor.fetchall())


def _dead_lettered(dlq_topic: str) -> set[uuid.UUID]:
    """Event ids the dead-letter store has stored from this run's DLQ topic."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT event_id FROM events_deadletter WHERE dlq_topic = %s",
            [dlq_topic],
        )
        return {row[0] for row in cursor.fetchall()}


def _retries_scheduled(produced: Produced) -> int:
    low, high = produced.id_range
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM events_failedattempt WHERE handler = %s "
            "AND event_id BETWEEN %s AND %s AND outcome = 'retry_scheduled'",
            [HANDLER_NAME, low, high],
        )
        return cursor.fetchone()[0]


def _dlq_messages(dlq_topic: str) -> int:
    """Messages on the DLQ topic itself (the store's rows are checked against it)."""
    from events.core.kafka import TopicPartition, build_consumer

    consumer = build_consumer(f"{dlq_topic}-count")
    try:
        partitions = consumer.list_topics(dlq_topic, timeout=10).topics[dlq_topic]
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(dlq_topic, n), timeout=10)
                for n in partitions.partitions
            )
        )
    finally:
        consumer.close()


def _consume_all(produced: Produced, dlq_topic: str) -> float:
    """Run `run_consumers` until every event succeeded or was dead-lettered, or
    nothing changed for STALL_SECONDS; return the seconds it ran."""
    from events.core.conf import pipeline_settings

    prefix = pipeline_settings().topic_prefix
    argv = [sys.executable, "manage.py", "run_consumers", "--topics", "reservation"]
    argv += ["--group", f"{prefix}flaky"]
    env = consumer_env(
        DJANGO_SETTINGS_MODULE="bench.settings",
        EVENTS_RETRY_BACKOFF_MS=str(BACKOFF_MS),
        # Dead letters are the point here: the storm guard would pause for 30 s.
        EVENTS_DLQ_MAX_PER_WINDOW="1000000",
    )
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        # The handler's failures log a line each: kept out of the step's output.
        process = subprocess.Popen(argv, env=env, stderr=log)
        try:
            _wait_for_outcomes(process, produced, dlq_topic, log)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return time.monotonic() - started


def _wait_for_outcomes(
    process: subprocess.Popen[bytes],
    produced: Produced,
    dlq_topic: str,
    log: IO[str],
) -> None:
    done, changed = -1, time.monotonic()
    while done < len(produced.seq_of):
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"run_consumers exited early:\n{log.read()[-3000:]}")
        now_done = len(_succeeded(produced).keys() | _dead_lettered(dlq_topic))
        if now_done != done:
            done, changed = now_done, time.monotonic()
        elif time.monotonic() - changed > STALL_SECONDS:
            return
        time.sleep(0.25)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial share (sound near 0 and 1 too)."""
    if n == 0:
        return (math.nan, math.nan)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return (round(centre - half, 4), round(centre + half, 4))


def _one(p: float, count: int, attempts: int) -> dict[str, object]:
    from events.core.conf import pipeline_settings

    seed = f"{SEED}:retry:{p}"
    with own_topics():
        dlq_topic = pipeline_settings().dlq_topic("reservation")
        produced = _produce(count, p, seed)
        seconds = _consume_all(produced, dlq_topic)
        succeeded = _succeeded(produced)
        dead = _dead_lettered(dlq_topic)
        dlq_messages = _dlq_messages(dlq_topic)
        retries = _retries_scheduled(produced)
    return _tally(p, seed, attempts, produced, succeeded, dead) | {
        "dlq_messages": dlq_messages,
        "retries_scheduled": retries,
        "seconds": round(seconds, 1),
    }


def _tally(
    p: float,
    seed: str,
    attempts: int,
    produced: Produced,
    succeeded: dict[uuid.UUID, int],
    dead: set[uuid.UUID],
) -> dict[str, object]:
    """The run's figures, the theory, and the check against the seeded prediction."""
    n = len(produced.seq_of)
    predicted = {
        event_id: first_success(seed=seed, seq=seq, p=p, attempts=attempts)
        for event_id, seq in produced.seq_of.items()
    }
    observed: dict[uuid.UUID, int | None] = {}
    for event_id in produced.seq_of:
        if event_id in succeeded:
            observed[event_id] = succeeded[event_id]
        elif event_id in dead:
            observed[event_id] = None
    s, d = len(succeeded), len(dead & produced.seq_of.keys())
    ended = len(observed)  # an event both succeeded and dead-lettered counts once
    share = s / n
    low, high = wilson(s, n)
    theory = 1 - p**attempts
    by_attempt = {str(k): 0 for k in range(1, attempts + 1)}
    for attempt in succeeded.values():
        by_attempt[str(attempt)] += 1
    return {
        "p": p,
        "events": n,
        "succeeded": s,
        "dead_lettered": d,
        "success_share": round(share, 4),
        "theory_share": round(theory, 4),
        "ci95": [low, high],
        "theory_in_ci95": low <= theory <= high,
        "lost": n - ended,
        "doubled": len(succeeded.keys() & dead),
        "succeeded_at_attempt": by_attempt,
        "theory_at_attempt": {
            str(k): round(n * p ** (k - 1) * (1 - p), 1) for k in range(1, attempts + 1)
        },
        "seeded_prediction": {
            "succeeded": sum(1 for v in predicted.values() if v is not None),
            "events_not_as_predicted": sum(
                1 for k, v in predicted.items() if observed.get(k, "lost") != v
            ),
        },
    }


def run() -> dict[str, object]:
    """Step `retry:run`: p = 0.1, 0.3, 0.5, one run of `count` events each."""
    from events.core.conf import RetryPolicy, pipeline_settings

    attempts = pipeline_settings().retry.attempts
    policy = RetryPolicy(attempts=attempts, initial_backoff_ms=BACKOFF_MS)
    count = scaled(2_000, minimum=200)
    started = time.monotonic()
    runs = [_one(p, count, attempts) for p in PROBABILITIES]
    return {
        "retry_success": {
            "attempts": attempts,
            "attempts_meaning": f"{attempts} deliveries in total (the first and "
            f"{attempts - 1} retries): RetryPolicy.attempts counts deliveries; the "
            "runner dead-letters a failure when attempt >= attempts",
            "theory": f"1 - p^{attempts}",
            "theory_at_attempt": "events * p^(k-1) * (1-p) succeed at attempt k",
            "backoff_ms": [policy.delay_ms(k) for k in range(1, attempts)],
            "failure": "ConnectionError (transient: retry topics, then the DLQ) with "
            "probability p per attempt, from blake2b(seed:event number:attempt)",
            "counted": "succeeded: the handler's inbox rows (committed with its "
            "transaction, absent when it raised), with the attempt the runner "
            "recorded; dead_lettered: DeadLetter rows stored from the run's DLQ "
            "topic; dlq_messages: the DLQ topic's own message count",
            "settings": "EVENTS_RETRY_BACKOFF_MS=50 and EVENTS_DLQ_MAX_PER_WINDOW="
            "1000000 for the consumer (the storm guard would pause it 30 s after "
            "100 dead letters)",
            "ci95": "Wilson score interval of success_share",
            "runs": runs,
            "step_wall_s": round(time.monotonic() - started, 1),
        }
    }
