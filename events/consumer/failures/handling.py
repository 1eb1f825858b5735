"""One failed unit through the parts: classify, route, then retry or dead-letter it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import close_old_connections

from events.consumer.clock import Clock
from events.consumer.failures.attempts import record_failure
from events.consumer.failures.classifier import classifier_for
from events.consumer.failures.publisher import FailurePublisher
from events.consumer.failures.router import Route, route
from events.consumer.failures.storm_guard import DeadLetterRateGuard
from events.consumer.units import Unit, audit_unit
from events.core.conf import PipelineSettings, RetryPolicy
from events.core.registry import HandlerSpec, RetryMode
from events.models import FailedAttempt
from events.observability import audit, metrics

logger = logging.getLogger("events.consumer")


@dataclass(frozen=True)
class BatchHooks:
    """What dealing with a failure may need from the batch it happened in."""

    # Confirm the retries/dead letters sent so far and commit what is finished; False
    # if that failed (the batch is consumed again).
    checkpoint: Callable[[], bool]
    # Sleep unless the consumer stops; True if it is stopping.
    wait: Callable[[float], bool]
    # Run one unit again in its own transaction; its new error, or None.
    run_again: Callable[[Unit], BaseException | None]


class FailureHandler:
    """Retry, dead-letter or retry in place one failed unit.

    - Not retryable (the classifier, per handler) or out of attempts: the DLQ, at once.
      Under a dead-letter storm (the guard refuses) nothing is sent: the caller stops
      the batch there and pauses.
    - RetryMode.TOPIC: to the next retry topic with its due time; the partition goes on.
    - RetryMode.BLOCKING: the batch so far is committed (`checkpoint`), then the unit is
      retried here after each backoff while the partition waits.
    """

    def __init__(
        self,
        *,
        conf: PipelineSettings,
        publisher: FailurePublisher,
        guard: DeadLetterRateGuard,
        clock: Clock,
    ) -> None:
        self._conf = conf
        self._publisher = publisher
        self._guard = guard
        self._clock = clock

    def handle(self, unit: Unit, error: BaseException, batch: BatchHooks) -> bool:
        """Deal with `unit`'s failure; False if the batch must stop at this unit."""
        spec = unit.spec
        if spec is None or not classifier_for(spec).is_retryable(error):
            return self.dead_letter(unit, error, guard=True)
        if spec.retry is RetryMode.BLOCKING:
            return self._retry_in_place(unit, error, batch)
        step = self._next_step(unit, spec, error)
        if step.dead_letter:
            return self.dead_letter(unit, error, guard=True)
        self._retry_on_topic(unit, error, step)
        return True

    def dead_letter(self, unit: Unit, error: BaseException, *, guard: bool) -> bool:
        """Send `unit` to its stream's DLQ; False if the storm guard refused."""
        if guard and not self._guard.try_acquire():
            return False
        origin = unit.origin
        self._publisher.send_dead_letter(
            self._conf.dlq_topic(unit.stream),
            unit.message,
            origin=origin,
            handler=unit.handler_name,
            attempts=unit.where.attempt,
            error=error,
        )
        metrics.DEAD_LETTERED.labels(
            unit.message.topic(), unit.handler_name or "-"
        ).inc()
        audit_unit(audit.DEAD_LETTERED, unit, error)
        logger.error(
            "dead-lettered %s[%d]@%d for %s after %d attempt(s): %s: %s",
            origin.topic,
            origin.partition,
            origin.offset,
            unit.handler_name or "decoding",
            unit.where.attempt,
            type(error).__name__,
            error,
        )
        if unit.spec is not None:
            record_failure(unit, error, FailedAttempt.Outcome.DEAD_LETTERED)
        return True

    def _next_step(self, unit: Unit, spec: HandlerSpec, error: BaseException) -> Route:
        return route(
            retryable=classifier_for(spec).is_retryable(error),
            mode=spec.retry,
            attempt=unit.where.attempt,
            policy=self._policy(spec),
            retry_topics=self._conf.retry_topics(unit.stream),
        )

    def _retry_on_topic(self, unit: Unit, error: BaseException, step: Route) -> None:
        assert step.topic is not None
        due_at_ms = self._clock.now_ms() + step.delay_ms
        self._publisher.send_retry(
            step.topic,
            unit.message,
            origin=unit.origin,
            handler=unit.handler_name,
            attempt=unit.where.attempt + 1,
            due_at_ms=due_at_ms,
        )
        _note_retry(unit, error)
        record_failure(unit, error, FailedAttempt.Outcome.RETRY_SCHEDULED, due_at_ms)

    def _retry_in_place(
        self, unit: Unit, error: BaseException, batch: BatchHooks
    ) -> bool:
        """Retry where it is, holding the partition; False if stopped meanwhile."""
        assert unit.spec is not None
        # What came before is finished and committed before we start waiting.
        if not batch.checkpoint():
            return False
        while True:
            step = self._next_step(unit, unit.spec, error)
            if step.dead_letter:
                # The partition waited out the backoffs: not a storm to brake.
                return self.dead_letter(unit, error, guard=False)
            record_failure(unit, error, FailedAttempt.Outcome.RETRIED_IN_PLACE)
            _note_retry(unit, error)
            if batch.wait(step.delay_ms / 1000):
                return False
            unit.where = unit.where.next_attempt()
            close_old_connections()
            next_error = batch.run_again(unit)
            if next_error is None:
                return True
            error = next_error

    def _policy(self, spec: HandlerSpec) -> RetryPolicy:
        return spec.retry_policy or self._conf.retry


def _note_retry(unit: Unit, error: BaseException) -> None:
    metrics.RETRIED.labels(unit.where.topic, unit.handler_name).inc()
    audit_unit(audit.RETRIED, unit, error)
