"""The one consumer loop: poll, hand batches to a strategy, commit, rewind, pause, stop.

Every consumer of the pipeline (the handler runner, the dead-letter store) is this
loop with a different `Strategy`, the way Sentry's arroyo separates its stream
processor from the processing strategies. The loop owns the Kafka consumer and what
all of them need once: subscribing and assignment bookkeeping, how long a rebalance
kept a partition idle, the pause schedule, synchronous commits, rewinding, a
database failure (rewind the batch, wait, read it again), lag reports, and stopping.
The strategy owns what a message means.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from django.db import DatabaseError, close_old_connections

from events.consumer.clock import SYSTEM_CLOCK, Clock
from events.core.kafka import (
    KafkaError,
    KafkaException,
    Message,
    Record,
    TopicPartition,
    build_consumer,
)
from events.observability import metrics

logger = logging.getLogger("events.consumer")

TP = tuple[str, int]
LAG_REPORT_SECONDS = 5.0
COMMITTED_TIMEOUT_SECONDS = 1.0
DATABASE_RETRY_SECONDS = 1.0

# Told the consumer group's lag per partition every LAG_REPORT_SECONDS.
LagSink = Callable[[str, dict[TP, int]], None]


class LoopControl(Protocol):
    """What a strategy may ask of the loop while it processes a batch."""

    @property
    def stopping(self) -> bool: ...

    @property
    def clock(self) -> Clock: ...

    def wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True if the loop is stopping."""
        ...

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit these next-offsets now (synchronously)."""
        ...

    def rewind(self, messages: list[Record]) -> None:
        """Seek each partition back to its first message in `messages`."""
        ...

    def pause_until(self, message: Record, due_at_ms: int) -> None:
        """Pause `message`'s partition until `due_at_ms`, to resume at `message`."""
        ...

    def pause_all_until(self, due_at_ms: int) -> None:
        """Pause every assigned partition until `due_at_ms`."""
        ...


class Strategy(Protocol):
    """The per-message work of one kind of consumer."""

    def start(self) -> None:
        """Acquire what processing needs (producers), in the loop's thread."""
        ...

    def process(self, messages: list[Record], loop: LoopControl) -> None:
        """Process a batch (no error messages in it); commit through `loop`.

        A DatabaseError raised here makes the loop rewind the whole batch and read it
        again after DATABASE_RETRY_SECONDS: strategies must be idempotent per message.
        """
        ...

    def close(self) -> None:
        """Flush and release, after the last batch."""
        ...


class ConsumerLoop:
    """Run `strategy` over `topics` as consumer group `group_id` until `stop()`.

    Contract:
    - `run()` blocks; `stop()` (signal-safe) lets the batch in flight finish; then the
      strategy is closed and the consumer leaves the group.
    - Offsets move only when the strategy commits them; a rebalance hands a partition
      over from its last commit.
    - A partition paused until a time is resumed at that time, even when nothing else
      arrives (the poll waits no longer than the next resume).
    """

    def __init__(
        self,
        *,
        topics: list[str],
        group_id: str,
        strategy: Strategy,
        batch_size: int,
        poll_timeout: float = 0.5,
        consumer_overrides: dict[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat: bool = False,
        report_lag: bool = True,
        log_joins: bool = True,
        lag_sink: LagSink | None = None,
        description: str = "consuming",
        detail: str = "",
        stopped: str = "consumer of group %s stopped and left the group",
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self.strategy = strategy
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.assigned: set[TP] = set()
        self._consumer_overrides = consumer_overrides or {}
        self._clock = clock
        self._heartbeat = heartbeat
        self._report_lag = report_lag
        self._log_joins = log_joins
        self._description = description
        self._detail = detail
        self._stopped = stopped
        self._stop = threading.Event()
        self._paused_until_ms: dict[TP, int] = {}
        self._lag = LagReporter(group_id, clock, lag_sink)
        # Newly assigned partitions until their first message: how long a rebalance
        # kept them idle is logged (and is what the join benchmark reads).
        self._assigned_at: dict[TP, float] = {}
        self._subscribed_at = 0.0
        self._consumer: Any = None

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to finish the batch in flight and return (signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def clock(self) -> Clock:
        return self._clock

    def wait(self, seconds: float) -> bool:
        return self._clock.wait(self._stop, seconds)

    def run(self) -> None:
        self._consumer = build_consumer(self.group_id, **self._consumer_overrides)
        self.strategy.start()
        self._subscribed_at = self._clock.monotonic()
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        logger.info(
            "%s %s as group %s%s",
            self._description,
            ", ".join(self.topics),
            self.group_id,
            self._detail,
        )
        try:
            while not self.stopping:
                self.run_once()
        finally:
            self.strategy.close()
            self._consumer.close()
            close_old_connections()
            logger.info(self._stopped, self.group_id)

    def run_once(self) -> None:
        """One turn: resume what is due, poll a batch, process it, report lag."""
        if self._heartbeat:
            metrics.CONSUMER_HEARTBEAT.set_to_current_time()
        self._resume_due_partitions()
        messages = self._usable(self._next_batch())
        if messages:
            if self._assigned_at:
                self._note_first_messages(messages)
            close_old_connections()
            try:
                self.strategy.process(messages, self)
            except DatabaseError:
                logger.exception("database failure; the batch will be consumed again")
                self.rewind(messages)
                self.wait(DATABASE_RETRY_SECONDS)
        if self._report_lag and self.assigned:
            self._lag.maybe_report(self._consumer, self.assigned)

    # -- polling ------------------------------------------------------------------------

    def _next_batch(self) -> list[Message]:
        """What is queued now, up to a batch; if nothing is, wait for one message.

        consume(n, timeout) returns when n messages are there or the timeout ends: at a
        low rate every message would wait the whole poll timeout for a batch to fill.
        """
        messages: list[Message] = self._consumer.consume(
            num_messages=self.batch_size, timeout=0
        )
        if messages:
            return messages
        first = self._consumer.poll(timeout=self._poll_timeout())
        if first is None:
            return []
        if self.batch_size == 1:
            return [first]
        rest = self._consumer.consume(num_messages=self.batch_size - 1, timeout=0)
        return [first, *rest]

    def _usable(self, messages: list[Message]) -> list[Record]:
        """Drop error events (logging all but end-of-partition) from a batch."""
        if all(m.error() is None for m in messages):
            return cast(list[Record], messages)
        usable: list[Record] = []
        for message in messages:
            error = message.error()
            if error is None:
                usable.append(cast(Record, message))
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.error("consume error: %s", error)
        return usable

    def _poll_timeout(self) -> float:
        if not self._paused_until_ms:
            return self.poll_timeout
        next_due = (min(self._paused_until_ms.values()) - self._clock.now_ms()) / 1000
        return max(0.0, min(self.poll_timeout, next_due))

    # -- assignment ---------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        now = self._clock.monotonic()
        for p in partitions:
            self.assigned.add((p.topic, p.partition))
            if self._log_joins:
                self._assigned_at[(p.topic, p.partition)] = now
        logger.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Strategies commit before process() returns, so everything processed is
        # committed when a partition is taken away.
        for p in partitions:
            self._paused_until_ms.pop((p.topic, p.partition), None)
            self._assigned_at.pop((p.topic, p.partition), None)
            self.assigned.discard((p.topic, p.partition))
        logger.info("revoked %s", _names(partitions))

    def _note_first_messages(self, messages: list[Record]) -> None:
        for message in messages:
            tp = (message.topic(), message.partition())
            assigned_at = self._assigned_at.pop(tp, None)
            if assigned_at is None:
                continue
            now = self._clock.monotonic()
            logger.info(
                "%s[%d] consuming %.3f s after its assignment, %.3f s after this "
                "consumer subscribed",
                tp[0],
                tp[1],
                now - assigned_at,
                now - self._subscribed_at,
            )
            if not self._assigned_at:
                return

    # -- offsets and pauses -------------------------------------------------------------

    def commit(self, offsets: Mapping[TP, int]) -> None:
        if not offsets:
            return
        positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition; its new owner re-reads from the
            # last commit, and strategies are idempotent per message.
            logger.warning(
                "offset commit failed (%s); messages will be redelivered", exc
            )

    def rewind(self, messages: list[Record]) -> None:
        first: dict[TP, int] = {}
        for message in messages:
            tp = (message.topic(), message.partition())
            offset = message.offset()
            first[tp] = min(first.get(tp, offset), offset)
        for (topic, partition), offset in first.items():
            if (topic, partition) not in self.assigned:
                continue  # revoked meanwhile: its new owner starts from the commit
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                logger.warning("seek %s[%d] failed: %s", topic, partition, exc)

    def pause_until(self, message: Record, due_at_ms: int) -> None:
        tp = TopicPartition(message.topic(), message.partition(), message.offset())
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        key = (message.topic(), message.partition())
        self._paused_until_ms[key] = max(due_at_ms, self._paused_until_ms.get(key, 0))

    def pause_all_until(self, due_at_ms: int) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in self.assigned])
        for tp in self.assigned:
            self._paused_until_ms[tp] = max(due_at_ms, self._paused_until_ms.get(tp, 0))

    def _resume_due_partitions(self) -> None:
        if not self._paused_until_ms:
            return
        now = self._clock.now_ms()
        due = [tp for tp, until in self._paused_until_ms.items() if until <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._paused_until_ms[tp]


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


class LagReporter:
    """Every LAG_REPORT_SECONDS: lag per assigned partition, from the consumer's own
    positions and cached watermarks (no broker round trip), to Prometheus and the sink.
    """

    def __init__(self, group_id: str, clock: Clock, sink: LagSink | None) -> None:
        self._group_id = group_id
        self._clock = clock
        self._sink = sink
        self._next_report = 0.0

    def maybe_report(self, consumer: Any, assigned: set[TP]) -> None:
        now = self._clock.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + LAG_REPORT_SECONDS
        lags = _lags(consumer, assigned)
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        if self._sink is not None and lags:
            # An idle consumer runs no batch, whose start replaces a connection a
            # database restart broke: do it here, or no report is stored until then.
            close_old_connections()
            try:
                self._sink(self._group_id, lags)
            except DatabaseError as exc:
                logger.warning("lag report not stored: %s", exc)


def _lags(consumer: Any, assigned: set[TP]) -> dict[TP, int]:
    partitions = [TopicPartition(t, p) for t, p in assigned]
    try:
        positions = consumer.position(partitions)
        # A partition that has delivered nothing since it was assigned (an idle one,
        # after a rebalance) has no position yet: it will start at its commit.
        unknown = [p for p in positions if p.offset < 0]
        if unknown:
            committed = {
                (c.topic, c.partition): c
                for c in consumer.committed(unknown, timeout=COMMITTED_TIMEOUT_SECONDS)
            }
            positions = [
                committed.get((p.topic, p.partition), p) if p.offset < 0 else p
                for p in positions
            ]
    except KafkaException:
        return {}
    lags: dict[TP, int] = {}
    for position in positions:
        if position.offset < 0:
            continue
        _low, high = consumer.get_watermark_offsets(position, cached=True)
        if high >= 0:
            lags[(position.topic, position.partition)] = max(0, high - position.offset)
    return lags
