"""What a requeued dead letter becomes on its topic, and sending a batch of them.

`plan_message` turns a row into the message a requeue sends (and the RequeueResult that
reports on it); `send_messages` produces a batch on a given producer and waits for every
acknowledgement. Neither touches the database: events.dead_letters.requeue calls them
between its two short transactions, so no row lock is held while the broker answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from events.core.headers import (
    REPLAY_COUNT,
    REQUEUE_HEADERS,
    REQUEUED_FROM,
    is_pipeline_header,
)
from events.core.kafka import KafkaError, KafkaException, Message, Producer
from events.dead_letters.rows import decode_headers
from events.models import DeadLetter

DEFAULT_DELIVERY_TIMEOUT_MS = 30_000
# flush() waits this much longer than the delivery timeout, so a delivery that times
# out reports its error through the callback rather than being cut off by flush().
FLUSH_GRACE_SECONDS = 5


@dataclass
class RequeueResult:
    """What happened (or, in a dry run, would happen) to one dead letter."""

    dead_letter_id: int
    outcome: str  # sent | would_send | refused | failed | skipped
    topic: str
    replay_count: int
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition: int | None = None
    offset: int | None = None
    error: str = ""

    def describe(self) -> str:
        """One line for a log or an admin message: id, outcome, where, replay, error."""
        where = f"{self.topic}"
        if self.offset is not None:
            where += f"[{self.partition}]@{self.offset}"
        text = f"dead letter {self.dead_letter_id}: {self.outcome} -> {where}"
        text += f" (replay {self.replay_count})"
        return text + (f": {self.error}" if self.error else "")


def plan_message(row: DeadLetter, payload_override: Any) -> RequeueResult:
    """The message a requeue of `row` sends: its original key, value (or the edited
    payload) and business headers, plus `x-requeued-from` and `x-replay-count`."""
    # Retry and dead-letter bookkeeping goes (every `kafka_dlt-*`, old names too); the
    # requeue's own headers are replaced, never repeated.
    headers = [
        (k, v)
        for k, v in decode_headers(row.headers)
        if not is_pipeline_header(k) and k not in REQUEUE_HEADERS
    ]
    replay = row.replay_count + 1
    headers += [
        (REQUEUED_FROM, str(row.pk).encode()),
        (REPLAY_COUNT, str(replay).encode()),
    ]
    value = _bytes(row.value)
    if payload_override is not None:
        value = json.dumps(payload_override).encode()
    return RequeueResult(
        dead_letter_id=row.pk,
        outcome="pending",
        topic=row.original_topic,
        replay_count=replay,
        key=_bytes(row.key),
        value=value,
        headers=headers,
    )


def send_timeout_seconds(overrides: Mapping[str, Any]) -> float:
    """How long `send_messages` may wait at most with these producer overrides."""
    timeout_ms = int(
        overrides.get("delivery.timeout.ms")
        or overrides.get("message.timeout.ms")
        or DEFAULT_DELIVERY_TIMEOUT_MS
    )
    return timeout_ms / 1000 + FLUSH_GRACE_SECONDS


def send_messages(
    results: list[RequeueResult], producer: Producer, *, timeout: float
) -> None:
    """Produce every planned message and wait up to `timeout` s for each answer.

    Blocks. Each result ends "sent" (with partition and offset) or "failed" (with the
    broker's or the producer's error, or no answer in time); a letter without an
    original topic fails without being produced.
    """
    for result in results:
        if not result.topic:
            result.outcome = "failed"
            result.error = "the dead letter names no original topic"
            continue
        headers: list[tuple[str, str | bytes | None]] = [*result.headers]
        try:
            producer.produce(
                result.topic,
                key=result.key,
                value=result.value,
                headers=headers,
                on_delivery=_on_delivery(result),
            )
        except (KafkaException, BufferError) as exc:
            # Refused before it left the process: too large, or the queue is full.
            result.outcome = "failed"
            result.error = f"the producer refused it: {exc}"
    producer.flush(timeout)
    for result in results:
        if result.outcome == "pending":
            result.outcome = "failed"
            result.error = "no acknowledgement from the broker in time"


def _on_delivery(
    result: RequeueResult,
) -> Callable[[KafkaError | None, Message], None]:
    def callback(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            result.outcome = "failed"
            result.error = f"broker did not acknowledge: {error.str()}"
        else:
            result.outcome = "sent"
            result.partition = message.partition()
            result.offset = message.offset()

    return callback


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return bytes(value) if value is not None else None
