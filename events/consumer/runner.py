"""The consumer runner: Kafka messages -> registered handlers, with retries and DLQs.

Entry point: `ConsumerRunner(...).run()`, used by `manage.py run_consumers`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, close_old_connections

from events.consumer.dispatch import (
    Coordinates,
    Unit,
    audit_unit,
    is_poison,
    run_optimistically,
)
from events.consumer.storm_guard import DeadLetterRateGuard
from events.core.conf import PipelineSettings, RetryPolicy, pipeline_settings
from events.core.headers import (
    RETRY_ATTEMPT,
    RETRY_DUE_AT_MS,
    RETRY_HANDLER,
    TRACE_ID,
    dead_letter_headers,
    header_map,
    retry_headers,
)
from events.core.kafka import (
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
    build_consumer,
    build_producer,
)
from events.core.registry import HandlerSpec, RetryMode, handlers_accepting
from events.core.types import PoisonMessage, decode
from events.models import FailedAttempt
from events.observability import audit, metrics

logger = logging.getLogger(__name__)

TP = tuple[str, int]
LAG_REPORT_SECONDS = 5.0


class ConsumerRunner:
    """Consume the streams' main and retry topics in one group and run their handlers.

    Contract:
    - Blocks in `run()` until `stop()`; the message in flight finishes, offsets of what
      was processed are committed and the consumer leaves the group.
    - Effectively once: each handler's effects and its inbox row commit in one
      transaction; offsets are committed only after that transaction (and after the
      broker acknowledged any retry or dead-letter message it caused). A redelivered
      event finds its inbox row and changes nothing.
    - Batches: a consumed batch runs in one transaction with one inbox insert and a
      savepoint per multi-row insert (events.core.bulk_insert), none per event. At the
      first failure it is rolled back and split there: the events before it run
      again, the failed one is retried or dead-lettered on its own, so every event
      keeps its own outcome and each failure is seen once. Handlers run again after
      such a rollback: their database effects happen once, but anything
      they do outside the database must tolerate repeats (as with any redelivery).
    - Order: a partition's events are handled in offset order. With RetryMode.TOPIC a
      failed event moves to a retry topic and later events go on (per-key order is
      given up for that event); with RetryMode.BLOCKING the partition waits for it.
    - Retry topics: a message waits there until its due time; the runner pauses that
      partition and seeks back instead of sleeping, so other partitions keep flowing.
    - Poison (undecodable, unknown type or version, invalid data, PoisonMessage or
      ValidationError from a handler) goes to the DLQ at once; other failures are
      retried with exponential backoff, then dead-lettered.
    - Storm guard: past `dlq_max_per_window` dead letters per window, the runner pauses
      every partition for `dlq_storm_pause_seconds` and logs an error.
    """

    def __init__(
        self,
        *,
        streams: list[str] | None = None,
        group_id: str | None = None,
        batch_size: int | None = None,
        poll_timeout: float = 0.5,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.conf: PipelineSettings = pipeline_settings()
        self.streams = list(streams or self.conf.streams)
        unknown = [s for s in self.streams if s not in self.conf.streams]
        if unknown:
            raise ValueError(
                f"unknown streams {unknown}; known: {sorted(self.conf.streams)}"
            )
        self.group_id = group_id or self.conf.consumer_group
        self.batch_size = batch_size or self.conf.consumer_batch_size
        self.poll_timeout = poll_timeout
        self.topics = [
            topic
            for stream in self.streams
            for topic in [self.conf.topic(stream), *self.conf.retry_topics(stream)]
        ]
        self._streams_by_topic: dict[str, str | None] = {}
        self._retry_topic_set = {
            t for s in self.streams for t in self.conf.retry_topics(s)
        }
        self._consumer_overrides = consumer_overrides or {}
        self._guard = DeadLetterRateGuard(
            max_dead_letters=self.conf.dlq_max_per_window,
            window_seconds=self.conf.dlq_window_seconds,
        )
        self._stop = threading.Event()
        self._paused_until_ms: dict[TP, int] = {}
        self._send_errors: list[KafkaError] = []
        self._next_lag_report = 0.0
        self.assigned: set[TP] = set()
        # Newly assigned partitions until their first message: how long a rebalance
        # kept them idle is logged (and is what the join benchmark reads).
        self._assigned_at: dict[TP, float] = {}
        self._subscribed_at = 0.0
        self._consumer: Any = None
        self._producer: Any = None

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to finish the message in flight and return (signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self._consumer = build_consumer(self.group_id, **self._consumer_overrides)
        self._producer = build_producer()
        self._subscribed_at = time.monotonic()
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        logger.info(
            "consuming %s as group %s (%s protocol)",
            ", ".join(self.topics),
            self.group_id,
            self.conf.group_protocol,
        )
        try:
            while not self.stopping:
                metrics.CONSUMER_HEARTBEAT.set_to_current_time()
                self._resume_due_partitions()
                messages = self._next_batch()
                if messages:
                    self._process_batch(messages)
                self._report_lag()
        finally:
            self._producer.flush(10)
            self._consumer.close()
            close_old_connections()
            logger.info(
                "consumer of group %s stopped and left the group", self.group_id
            )

    def _next_batch(self) -> list[Message]:
        """What is queued now, up to a batch; if nothing is, wait for one message.

        consume(n, timeout) returns when n messages are there or the timeout ends: at a
        low rate every message waited the whole poll timeout (0.5 s) for a batch to fill.
        """
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=0)
        if messages:
            return messages
        first = self._consumer.poll(timeout=self._poll_timeout())
        if first is None:
            return []
        if self.batch_size == 1:
            return [first]
        rest = self._consumer.consume(num_messages=self.batch_size - 1, timeout=0)
        return [first, *rest]

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for p in partitions:
            self.assigned.add((p.topic, p.partition))
            self._assigned_at[(p.topic, p.partition)] = now
        logger.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Offsets are committed after every chunk, before consume() runs again, so
        # everything processed is already committed when a partition is taken away.
        for p in partitions:
            self._paused_until_ms.pop((p.topic, p.partition), None)
            self._assigned_at.pop((p.topic, p.partition), None)
            self.assigned.discard((p.topic, p.partition))
        logger.info("revoked %s", _names(partitions))

    # -- batches ----------------------------------------------------------------------

    def _process_batch(self, messages: list[Message]) -> None:
        close_old_connections()
        planned, units = self._plan(messages)
        progress = _Progress(planned, units)

        def checkpoint() -> bool:
            if not self._flush_sends():
                return False
            self._commit(progress.committable())
            return True

        try:
            stopped_at = self._execute(units, progress.mark_done, checkpoint)
        except DatabaseError:
            logger.exception("database failure; the batch will be consumed again")
            self._rewind(messages)
            self._stop.wait(1.0)
            return
        if not checkpoint():
            self._rewind(messages)
            self._stop.wait(1.0)
            return
        if stopped_at is not None:
            self._rewind(progress.unfinished())
            if not self.stopping:
                self._storm_pause()

    def _plan(self, messages: list[Message]) -> tuple[list[Message], list[Unit]]:
        """Decode the batch into units of work, in order; pause retry partitions
        whose next message is not due yet."""
        planned: list[Message] = []
        units: list[Unit] = []
        skipped: set[TP] = set()
        consumed: dict[str, int] = {}
        retry_topics = self._retry_topic_set
        for message in messages:
            if message.error() is not None:
                self._log_consume_error(message)
                continue
            topic, partition = message.topic(), message.partition()
            if skipped and (topic, partition) in skipped:
                continue
            consumed[topic] = consumed.get(topic, 0) + 1
            if self._assigned_at:
                self._note_first_message((topic, partition))
            headers = header_map(message.headers())
            if topic in retry_topics:
                due = _int(headers.get(RETRY_DUE_AT_MS))
                if due is not None and due > _now_ms():
                    skipped.add((topic, partition))
                    self._pause_until(message, due)
                    continue
            seq = len(planned)
            planned.append(message)
            units.extend(self._units_of(message, topic, partition, headers, seq))
        for topic, count in consumed.items():
            metrics.CONSUMED.labels(topic).inc(count)
        return planned, units

    def _stream_of(self, topic: str) -> str | None:
        stream = self._streams_by_topic.get(topic)
        if stream is None:
            stream = self._streams_by_topic[topic] = self.conf.stream_of(topic)
        return stream

    def _units_of(
        self,
        message: Message,
        topic: str,
        partition: int,
        headers: dict[str, str],
        seq: int,
    ) -> list[Unit]:
        # Runs once per consumed message: what only a retry or a dead letter needs
        # (the message's origin) is worked out when it is needed, not here.
        stream = self._stream_of(topic)
        assert stream is not None, f"consumed a topic of no stream: {topic}"
        attempt = 1
        if RETRY_ATTEMPT in headers:
            attempt = _int(headers[RETRY_ATTEMPT]) or 1
        # Shared by the units of this message: replaced (next_attempt), never changed.
        where = Coordinates(
            topic, partition, message.offset(), attempt, headers.get(TRACE_ID)
        )
        try:
            envelope = decode(message.value())
        except PoisonMessage as exc:
            return [Unit(message, stream, headers, where, error=exc, seq=seq)]
        specs = handlers_accepting(stream, envelope.event_type)
        target = headers.get(RETRY_HANDLER)
        if target is not None:
            specs = [s for s in specs if s.name == target]
            if not specs:
                logger.warning("retry for unknown handler %s dropped", target)
        return [
            Unit(message, stream, headers, where, envelope=envelope, spec=spec, seq=seq)
            for spec in specs
        ]

    def _note_first_message(self, tp: TP) -> None:
        assigned_at = self._assigned_at.pop(tp, None)
        if assigned_at is not None:
            now = time.monotonic()
            logger.info(
                "%s[%d] consuming %.3f s after its assignment, %.3f s after this "
                "consumer subscribed",
                tp[0],
                tp[1],
                now - assigned_at,
                now - self._subscribed_at,
            )

    def _log_consume_error(self, message: Message) -> None:
        error = message.error()
        if error.code() != KafkaError._PARTITION_EOF:
            logger.error("consume error: %s", error)

    def _execute(
        self,
        units: list[Unit],
        mark_done: Callable[[list[Unit]], None],
        checkpoint: Callable[[], bool],
    ) -> int | None:
        """Run the units in order; return the index where it had to stop, or None.

        Optimistic runs cover as many units as possible in one transaction. A failure
        rolls the run back; the units before the failed one are run again, the failed
        one is dealt with alone (its failure is remembered, never re-provoked).
        """
        known: dict[int, BaseException] = {}
        singly_until = 0  # units before this index run without batch handlers
        i = 0
        while i < len(units):
            if self.stopping:
                return i
            if i in known:
                unit, error = units[i], known.pop(i)
                if not self._after_failure(unit, error, checkpoint):
                    return i
                mark_done([unit])
                i += 1
                continue
            end = min((k for k in known if k > i), default=len(units))
            failure = run_optimistically(units[i:end], batches=i >= singly_until)
            if failure is None:
                mark_done(units[i:end])
                i = end
            elif failure.index is None:
                singly_until = end
            else:
                known[i + failure.index] = failure.error
        return None

    # -- failures -----------------------------------------------------------------------

    def _after_failure(
        self, unit: Unit, error: BaseException, checkpoint: Callable[[], bool]
    ) -> bool:
        """Retry, dead-letter or retry in place; False if the batch must stop here."""
        if unit.spec is None or is_poison(error):
            return self._dead_letter_unit(unit, error, guard=True)
        if unit.spec.retry is RetryMode.BLOCKING:
            return self._retry_in_place(unit, error, checkpoint)
        policy = self._policy(unit.spec)
        retry_topics = self.conf.retry_topics(unit.stream)
        if unit.where.attempt >= policy.attempts or not retry_topics:
            return self._dead_letter_unit(unit, error, guard=True)
        due_at_ms = _now_ms() + policy.delay_ms(unit.where.attempt)
        # The due time travels in a header, so any retry topic can hold any delay; a
        # handler whose policy has more attempts than there are topics reuses the last.
        retry_topic = retry_topics[min(unit.where.attempt, len(retry_topics)) - 1]
        self._send(
            retry_topic,
            unit.message,
            retry_headers(
                unit.message.headers(),
                origin=unit.origin,
                handler=unit.handler_name,
                attempt=unit.where.attempt + 1,
                due_at_ms=due_at_ms,
            ),
        )
        metrics.RETRIED.labels(unit.where.topic, unit.handler_name).inc()
        audit_unit(audit.RETRIED, unit, error)
        self._record_failure(
            unit, error, FailedAttempt.Outcome.RETRY_SCHEDULED, due_at_ms
        )
        return True

    def _retry_in_place(
        self, unit: Unit, error: BaseException, checkpoint: Callable[[], bool]
    ) -> bool:
        """Retry where it is, holding the partition; False if stopped meanwhile."""
        assert unit.spec is not None
        policy = self._policy(unit.spec)
        # What came before is finished and committed before we start waiting.
        if not checkpoint():
            return False
        while True:
            if is_poison(error) or unit.where.attempt >= policy.attempts:
                return self._dead_letter_unit(unit, error, guard=False)
            self._record_failure(unit, error, FailedAttempt.Outcome.RETRIED_IN_PLACE)
            metrics.RETRIED.labels(unit.where.topic, unit.handler_name).inc()
            audit_unit(audit.RETRIED, unit, error)
            if self._stop.wait(policy.delay_ms(unit.where.attempt) / 1000):
                return False
            unit.where = unit.where.next_attempt()
            close_old_connections()
            failure = run_optimistically([unit])
            if failure is None:
                return True
            error = failure.error

    def _dead_letter_unit(
        self, unit: Unit, error: BaseException, *, guard: bool
    ) -> bool:
        if guard and not self._guard.try_acquire():
            return False
        headers = dead_letter_headers(
            unit.message.headers(),
            origin=unit.origin,
            handler=unit.handler_name,
            attempts=unit.where.attempt,
            group=self.group_id,
            error=error,
        )
        self._send(self.conf.dlq_topic(unit.stream), unit.message, headers)
        metrics.DEAD_LETTERED.labels(
            unit.message.topic(), unit.handler_name or "-"
        ).inc()
        audit_unit(audit.DEAD_LETTERED, unit, error)
        logger.error(
            "dead-lettered %s[%d]@%d for %s after %d attempt(s): %s: %s",
            unit.origin.topic,
            unit.origin.partition,
            unit.origin.offset,
            unit.handler_name or "decoding",
            unit.where.attempt,
            type(error).__name__,
            error,
        )
        if unit.spec is not None:
            self._record_failure(unit, error, FailedAttempt.Outcome.DEAD_LETTERED)
        return True

    def _policy(self, spec: HandlerSpec) -> RetryPolicy:
        return spec.retry_policy or self.conf.retry

    # -- sending retries and dead letters ------------------------------------------------

    def _send(
        self, topic: str, message: Message, headers: list[tuple[str, bytes]]
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=message.key(),
                    value=message.value(),
                    headers=headers,
                    on_delivery=self._on_sent,
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def _on_sent(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._send_errors.append(error)

    def _flush_sends(self) -> bool:
        """Wait for the broker to acknowledge retry and DLQ messages of this chunk."""
        remaining = self._producer.flush(30)
        errors, self._send_errors = self._send_errors, []
        if remaining or errors:
            logger.error(
                "retry/DLQ messages not acknowledged (%d waiting, errors: %s); "
                "the chunk will be consumed again",
                remaining,
                errors[:3],
            )
            return False
        return True

    def _record_failure(
        self,
        unit: Unit,
        error: BaseException,
        outcome: str,
        next_attempt_ms: int | None = None,
    ) -> None:
        assert unit.envelope is not None
        FailedAttempt.objects.create(
            event_id=unit.envelope.event_id,
            handler=unit.handler_name,
            topic=unit.where.topic,
            partition=unit.where.partition,
            offset=unit.where.offset,
            attempt=unit.where.attempt,
            exception_class=f"{type(error).__module__}.{type(error).__qualname__}",
            message=str(error)[:2000],
            outcome=outcome,
            next_attempt_at=(
                datetime.fromtimestamp(next_attempt_ms / 1000, tz=UTC)
                if next_attempt_ms
                else None
            ),
        )

    # -- offsets, pauses, lag -------------------------------------------------------------

    def _commit(self, done: dict[TP, int]) -> None:
        if not done:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in done.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition; its new owner re-reads from the
            # last commit and the inbox turns the repeats into no-ops.
            logger.warning("offset commit failed (%s); events will be redelivered", exc)

    def _rewind(self, messages: list[Message]) -> None:
        """Seek each partition back to its first message in `messages`."""
        first: dict[TP, int] = {}
        for message in messages:
            if message.error() is not None:
                continue
            tp = (message.topic(), message.partition())
            first[tp] = min(first.get(tp, message.offset()), message.offset())
        for (topic, partition), offset in first.items():
            if (topic, partition) in self.assigned:
                try:
                    self._consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as exc:
                    logger.warning("seek %s[%d] failed: %s", topic, partition, exc)

    def _pause_until(self, message: Message, due_at_ms: int) -> None:
        tp = TopicPartition(message.topic(), message.partition(), message.offset())
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        key = (message.topic(), message.partition())
        self._paused_until_ms[key] = max(due_at_ms, self._paused_until_ms.get(key, 0))

    def _storm_pause(self) -> None:
        pause_ms = int(self.conf.dlq_storm_pause_seconds * 1000)
        metrics.DLQ_STORM_PAUSES.inc()
        logger.error(
            "DEAD-LETTER STORM: more than %d dead letters in %.0f s; pausing all %d "
            "partitions for %.0f s. Check the handlers before they empty the topics.",
            self.conf.dlq_max_per_window,
            self.conf.dlq_window_seconds,
            len(self.assigned),
            pause_ms / 1000,
        )
        until = _now_ms() + pause_ms
        partitions = [TopicPartition(t, p) for t, p in self.assigned]
        self._consumer.pause(partitions)
        for tp in self.assigned:
            self._paused_until_ms[tp] = max(until, self._paused_until_ms.get(tp, 0))

    def _resume_due_partitions(self) -> None:
        if not self._paused_until_ms:
            return
        now = _now_ms()
        due = [tp for tp, until in self._paused_until_ms.items() if until <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._paused_until_ms[tp]

    def _poll_timeout(self) -> float:
        if not self._paused_until_ms:
            return self.poll_timeout
        next_due = (min(self._paused_until_ms.values()) - _now_ms()) / 1000
        return max(0.0, min(self.poll_timeout, next_due))

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag_report or not self.assigned:
            return
        self._next_lag_report = now + LAG_REPORT_SECONDS
        partitions = [TopicPartition(t, p) for t, p in self.assigned]
        try:
            positions = self._consumer.position(partitions)
        except KafkaException:
            return
        for position in positions:
            if position.offset < 0:
                continue
            _low, high = self._consumer.get_watermark_offsets(position, cached=True)
            if high >= 0:
                metrics.CONSUMER_LAG.labels(
                    position.topic, str(position.partition)
                ).set(max(0, high - position.offset))


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Progress:
    """Which messages of a batch are finished, and the offsets that may be committed.

    A message is finished when all its units are; a partition's offset moves only past
    an unbroken run of finished messages, so a commit never skips unfinished work.
    """

    def __init__(self, planned: list[Message], units: list[Unit]) -> None:
        self.planned = planned
        self.remaining = [0] * len(planned)
        for unit in units:
            self.remaining[unit.seq] += 1
        self.by_partition: dict[TP, list[int]] = {}
        for seq, message in enumerate(planned):
            self.by_partition.setdefault(
                (message.topic(), message.partition()), []
            ).append(seq)
        self.next_index: dict[TP, int] = dict.fromkeys(self.by_partition, 0)

    def mark_done(self, units: list[Unit]) -> None:
        for unit in units:
            self.remaining[unit.seq] -= 1

    def committable(self) -> dict[TP, int]:
        """Offsets to commit now (each partition's finished prefix not yet committed)."""
        offsets: dict[TP, int] = {}
        for tp, seqs in self.by_partition.items():
            index = self.next_index[tp]
            while index < len(seqs) and self.remaining[seqs[index]] == 0:
                offsets[tp] = self.planned[seqs[index]].offset() + 1
                index += 1
            self.next_index[tp] = index
        return offsets

    def unfinished(self) -> list[Message]:
        return [
            self.planned[seq]
            for tp, seqs in self.by_partition.items()
            for seq in seqs[self.next_index[tp] :]
        ]
