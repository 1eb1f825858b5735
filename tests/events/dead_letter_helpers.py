"""Helpers for the dead-letter tests: a store runner in a thread, rows made directly."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from events.core import headers as dl
from events.core.conf import PipelineSettings
from events.dead_letters.rows import encode_headers
from events.dead_letters.store import DeadLetterStoreRunner
from events.models import DeadLetter

_offsets = itertools.count(1_000_000)


@contextmanager
def running_store(**options: Any) -> Iterator[DeadLetterStoreRunner]:
    store = DeadLetterStoreRunner(poll_timeout=0.1, **options)

    def run() -> None:
        try:
            store.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="dead-letter-store", daemon=True)
    thread.start()
    try:
        yield store
    finally:
        store.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "dead-letter store did not stop"


def ping_envelope(ping_id: str, *, mode: str = "ok", key: str = "") -> dict:
    return {
        "id": str(uuid.uuid4()),
        "type": "TestPinged",
        "version": 1,
        "occurred_at": "2026-11-25T12:00:00+00:00",
        "aggregate_type": "test",
        "aggregate_id": key or ping_id,
        "data": {"ping_id": ping_id, "mode": mode, "key_id": key},
    }


def make_dead_letter(
    conf: PipelineSettings,
    envelope: dict,
    *,
    key: str = "K",
    replay_count: int = 0,
    status: str = DeadLetter.Status.NEW,
    extra_headers: list[tuple[str, bytes]] | None = None,
) -> DeadLetter:
    """A row as the store would write it for a dead letter of `envelope`."""
    headers = [
        ("event_id", envelope["id"].encode()),
        ("event_type", envelope["type"].encode()),
        ("trace_id", b"trace-1"),
        (dl.DLT_ORIGINAL_TOPIC, conf.topic("reservation").encode()),
        (dl.DLT_EXCEPTION_FQCN, b"builtins.RuntimeError"),
        (dl.DLT_ATTEMPTS, b"3"),
        *(extra_headers or []),
    ]
    if replay_count:
        headers.append(("x-replay-count", str(replay_count).encode()))
    return DeadLetter.objects.create(
        dlq_topic=conf.dlq_topic("reservation"),
        dlq_partition=0,
        dlq_offset=next(_offsets),
        key=key.encode(),
        key_text=key,
        value=json.dumps(envelope).encode(),
        headers=encode_headers(headers),
        payload=envelope,
        event_id=envelope["id"],
        event_type=envelope["type"],
        error_class="builtins.RuntimeError",
        error_message="boom",
        traceback="Traceback ...\nRuntimeError: boom",
        original_topic=conf.topic("reservation"),
        original_partition=0,
        original_offset=0,
        attempts=3,
        handler="tests.effects.handlers.record_ping",
        consumer_group=conf.consumer_group,
        replay_count=replay_count,
        last_failed_at=datetime.now(tz=UTC),
        status=status,
    )


def legacy_dead_letter_headers(
    origin: dl.Origin,
    *,
    group: str,
    handler: str,
    message: str = "boom",
    event_id: str = "e1",
) -> list[tuple[str, bytes]]:
    """A dead letter's headers as our code wrote them before the Spring encoding:
    ASCII decimals for the numbers, our extras under Spring's prefix."""
    return [
        (dl.EVENT_ID, event_id.encode()),
        (dl.DLT_ORIGINAL_TOPIC, origin.topic.encode()),
        (dl.DLT_ORIGINAL_PARTITION, str(origin.partition).encode()),
        (dl.DLT_ORIGINAL_OFFSET, str(origin.offset).encode()),
        (dl.DLT_ORIGINAL_TIMESTAMP, str(origin.timestamp_ms).encode()),
        (dl.DLT_ORIGINAL_CONSUMER_GROUP, group.encode()),
        (dl.DLT_EXCEPTION_FQCN, b"builtins.RuntimeError"),
        (dl.DLT_EXCEPTION_MESSAGE, message.encode()),
        (
            dl.DLT_EXCEPTION_STACKTRACE,
            f"Traceback ...\nRuntimeError: {message}\n".encode(),
        ),
        (dl.LEGACY_DLT_ATTEMPTS, b"3"),
        (dl.LEGACY_DLT_HANDLER, handler.encode()),
        (dl.LEGACY_DLT_FAILED_AT, b"1700000000999"),
    ]


def read_all(topic: str, *, expected: int = 0, timeout: float = 3.0) -> list:
    """`read_topic`, waiting out a just-created topic that has no leader yet."""
    from events.core.kafka import KafkaException
    from tests.kafka_helpers import read_topic

    deadline = time.monotonic() + 15
    while True:
        try:
            return read_topic(topic, expected=expected, timeout=timeout)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
