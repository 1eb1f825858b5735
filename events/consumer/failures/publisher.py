"""Sending retry and dead-letter messages, and knowing when the broker has them.

The runner commits a consumed offset only after the retry or dead letter it caused is
acknowledged (`confirm`), so a crash in between re-consumes the event instead of
losing it. A message keeps its key, value and business headers; the pipeline's own
headers (events.core.headers) are replaced, never piled up.
"""

from __future__ import annotations

import logging
from typing import Any

from events.core.headers import (
    DLT_EXCEPTION_STACKTRACE,
    Origin,
    dead_letter_headers,
    retry_headers,
)
from events.core.kafka import (
    PERMANENT_PRODUCE_ERRORS,
    KafkaError,
    KafkaException,
    Record,
)

logger = logging.getLogger("events.consumer")

CONFIRM_TIMEOUT_SECONDS = 30.0


class FailurePublisher:
    """Produce retries and dead letters on one producer; `confirm` waits for them."""

    def __init__(self, producer: Any, *, group_id: str) -> None:
        self._producer = producer
        self._group_id = group_id
        self._errors: list[KafkaError] = []

    def send_retry(
        self,
        topic: str,
        message: Record,
        *,
        origin: Origin,
        handler: str,
        attempt: int,
        due_at_ms: int,
    ) -> None:
        """Send `message` to retry topic `topic` for `attempt` of `handler`."""
        headers = retry_headers(
            message.headers(),
            origin=origin,
            handler=handler,
            attempt=attempt,
            due_at_ms=due_at_ms,
        )
        self._produce(topic, message, headers)

    def send_dead_letter(
        self,
        topic: str,
        message: Record,
        *,
        origin: Origin,
        handler: str,
        attempts: int,
        error: BaseException,
    ) -> None:
        """Send `message` to the DLQ `topic` with where and why it failed."""
        headers = dead_letter_headers(
            message.headers(),
            origin=origin,
            handler=handler,
            attempts=attempts,
            group=self._group_id,
            error=error,
        )
        # A dead letter is the message plus up to 10 KB of error headers: if that
        # passes the broker's size limit, the letter goes without the stack trace
        # rather than not at all.
        self._produce(topic, message, headers, smaller=_without_stacktrace(headers))

    def confirm(self, timeout: float = CONFIRM_TIMEOUT_SECONDS) -> bool:
        """Whether everything sent so far reached the broker (False: consume again)."""
        remaining = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            logger.error(
                "retry/DLQ messages not acknowledged (%d waiting, errors: %s); "
                "the chunk will be consumed again",
                remaining,
                errors[:3],
            )
            return False
        return True

    def close(self) -> None:
        self._producer.flush(10)

    def _produce(
        self,
        topic: str,
        message: Record,
        headers: list[tuple[str, bytes]],
        *,
        smaller: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Hand the message to the producer; a refusal on the spot counts as a failed
        send (confirm() then fails and the batch is read again), never as a crash."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=message.key(),
                    value=message.value(),
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if smaller is not None and error.code() in PERMANENT_PRODUCE_ERRORS:
                    headers, smaller = smaller, None
                    continue
                logger.error("%s refused %s: %s", topic, _where(message), error)
                self._errors.append(error)
                return

    def _on_delivery(self, error: KafkaError | None, _message: Record) -> None:
        if error is not None:
            self._errors.append(error)


def _without_stacktrace(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers if k != DLT_EXCEPTION_STACKTRACE]


def _where(message: Record) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"
