"""The handler consumers' strategy: plan a batch, run its units, deal with failures.

Composes the parts: `Planner` (messages -> units, retry due times), `execute` (optimistic
runs split at failures), `run_optimistically` (the transaction with the inbox),
`FailureHandler` (classify, route, retry or dead-letter), `BatchProgress` (what may be
committed). The loop (events.consumer.loop) owns the consumer this runs on.
"""

from __future__ import annotations

import logging
from typing import Any

from events.consumer.clock import Clock
from events.consumer.dispatch import run_optimistically
from events.consumer.execution import execute
from events.consumer.failures.handling import BatchHooks, FailureHandler
from events.consumer.failures.publisher import FailurePublisher
from events.consumer.failures.storm_guard import DeadLetterRateGuard
from events.consumer.loop import LoopControl
from events.consumer.planning import Planner
from events.consumer.progress import BatchProgress
from events.consumer.units import Unit
from events.core.conf import PipelineSettings
from events.core.kafka import Record, build_producer
from events.observability import metrics

logger = logging.getLogger("events.consumer")

CONFIRM_FAILED_WAIT_SECONDS = 1.0


class RunHandlers:
    """Run the registered handlers of some streams on each consumed batch.

    Contract:
    - Effectively once: each handler's effects and its inbox row commit in one
      transaction; offsets are committed only after that transaction and after the
      broker acknowledged any retry or dead-letter message it caused. A redelivered
      event finds its inbox row and changes nothing.
    - Batches: a consumed batch runs in one transaction with one inbox insert and a
      savepoint per multi-row insert (events.core.bulk_insert), none per event. At the
      first failure it is rolled back and split there (events.consumer.execution), so
      every event keeps its own outcome and each failure is seen once. Handlers run
      again after such a rollback: their database effects happen once, but anything
      they do outside the database must tolerate repeats (as with any redelivery).
    - Order: a partition's events are handled in offset order. With RetryMode.TOPIC a
      failed event moves to a retry topic and later events go on (per-key order is
      given up for that event); with RetryMode.BLOCKING the partition waits for it.
    - Retry topics: a message waits there until its due time; its partition is paused
      and rewound instead of sleeping, so other partitions keep flowing.
    - Storm guard: past `dlq_max_per_window` dead letters per window, every partition
      pauses for `dlq_storm_pause_seconds` and an error is logged.
    """

    def __init__(
        self,
        *,
        conf: PipelineSettings,
        streams: list[str],
        group_id: str,
        clock: Clock,
    ) -> None:
        self._conf = conf
        self._group_id = group_id
        self._clock = clock
        self.planner = Planner(conf, streams)
        self._guard = DeadLetterRateGuard(
            max_dead_letters=conf.dlq_max_per_window,
            window_seconds=conf.dlq_window_seconds,
            clock=clock.monotonic,
        )
        self._producer: Any = None
        self._publisher: FailurePublisher | None = None
        self._failures: FailureHandler | None = None

    def start(self) -> None:
        self._producer = build_producer()
        self._publisher = FailurePublisher(self._producer, group_id=self._group_id)
        self._failures = FailureHandler(
            conf=self._conf,
            publisher=self._publisher,
            guard=self._guard,
            clock=self._clock,
        )

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()

    def process(self, messages: list[Record], loop: LoopControl) -> None:
        assert self._publisher is not None and self._failures is not None
        publisher, failures = self._publisher, self._failures
        plan = self.planner.plan(messages, self._clock.now_ms())
        for message, due_at_ms in plan.not_due:
            loop.pause_until(message, due_at_ms)
        progress = BatchProgress(plan.planned, plan.units)

        confirmed = True

        def checkpoint() -> bool:
            # A send the broker refused fails every later checkpoint of the batch too:
            # confirm() reports each error once, and committing past a refused retry
            # or dead letter would lose its event.
            nonlocal confirmed
            confirmed = confirmed and publisher.confirm()
            if confirmed:
                loop.commit(progress.committable())
            return confirmed

        hooks = BatchHooks(checkpoint=checkpoint, wait=loop.wait, run_again=_run_again)

        def on_failure(unit: Unit, error: BaseException) -> bool:
            return failures.handle(unit, error, hooks)

        stopped_at = execute(
            plan.units,
            run=run_optimistically,
            on_failure=on_failure,
            mark_done=progress.mark_done,
            stopping=lambda: loop.stopping,
        )
        if not checkpoint():
            # Not a storm: the batch is read again (the inbox absorbs what committed).
            loop.rewind(plan.planned)
            loop.wait(CONFIRM_FAILED_WAIT_SECONDS)
            return
        if stopped_at is not None:
            loop.rewind(progress.unfinished())
            if not loop.stopping:
                self._storm_pause(loop)

    def _storm_pause(self, loop: LoopControl) -> None:
        pause_s = self._conf.dlq_storm_pause_seconds
        metrics.DLQ_STORM_PAUSES.inc()
        logger.error(
            "DEAD-LETTER STORM: more than %d dead letters in %.0f s; pausing all "
            "partitions for %.0f s. Check the handlers before they empty the topics.",
            self._conf.dlq_max_per_window,
            self._conf.dlq_window_seconds,
            pause_s,
        )
        loop.pause_all_until(self._clock.now_ms() + int(pause_s * 1000))


def _run_again(unit: Unit) -> BaseException | None:
    failure = run_optimistically([unit])
    return failure.error if failure is not None else None
