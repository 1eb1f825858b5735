"""Test handlers, discovered like every app's handlers.py (test settings install the app)."""

from __future__ import annotations

import os
import time
from collections import Counter

from django.db import connection

from events.core.conf import RetryPolicy
from events.core.delivery import Delivery
from events.core.registry import RetryMode, handler
from events.core.types import PoisonMessage
from tests.effects.event_types import TestBatched, TestOrdered, TestPinged
from tests.effects.models import Effect

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff_ms=200, multiplier=2.0)
failures: Counter[str] = Counter()
# How many deliveries each call of the batch handler got, in call order.
batch_calls: list[int] = []


def _behave(event: TestPinged, handler_name: str) -> None:
    if event.mode == "poison":
        raise PoisonMessage(f"ping {event.ping_id} is unusable")
    if event.mode == "fail":
        raise RuntimeError(f"ping {event.ping_id} always fails")
    if event.mode == "lose-db" and failures[event.ping_id] < event.fail_times:
        # The database goes away under the handler (a restart, a cut connection).
        failures[event.ping_id] += 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    if event.mode == "deadlock" and failures[event.ping_id] < event.fail_times:
        # PostgreSQL chose this transaction as a deadlock's victim (SQLSTATE 40P01).
        failures[event.ping_id] += 1
        with connection.cursor() as cursor:
            cursor.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$"
            )
    if event.mode == "flaky" and failures[event.ping_id] < event.fail_times:
        failures[event.ping_id] += 1
        raise ConnectionError(
            f"ping {event.ping_id} transient failure {failures[event.ping_id]}"
        )
    # The process id tells which consumer of a group did the work.
    Effect.objects.create(
        ping_id=event.ping_id, n=event.n, handler=f"{handler_name}@{os.getpid()}"
    )
    if event.sleep_ms:
        time.sleep(event.sleep_ms / 1000)


@handler("reservation", events=[TestPinged], retry_policy=FAST_RETRY)
def record_ping(delivery: Delivery[TestPinged]) -> None:
    _behave(delivery.event, "record_ping")


@handler(
    "seat-hold-expired",
    events=[TestOrdered],
    retry=RetryMode.BLOCKING,
    retry_policy=FAST_RETRY,
)
def record_ordered(delivery: Delivery[TestOrdered]) -> None:
    _behave(delivery.event, "record_ordered")


@handler("payment-complete", events=[TestBatched], batch=True, retry_policy=FAST_RETRY)
def record_batch(deliveries: list[Delivery[TestBatched]]) -> None:
    """All or nothing, like a bulk insert: one bad event fails the whole call."""
    batch_calls.append(len(deliveries))
    for delivery in deliveries:
        event = delivery.event
        if event.mode == "poison":
            raise PoisonMessage(f"ping {event.ping_id} is unusable")
        if event.mode == "fail":
            raise RuntimeError(f"ping {event.ping_id} always fails")
        if event.mode == "flaky" and failures[event.ping_id] < event.fail_times:
            failures[event.ping_id] += 1
            raise ConnectionError(f"ping {event.ping_id} transient failure")
    Effect.objects.bulk_create(
        Effect(ping_id=d.event.ping_id, n=d.attempt, handler="record_batch")
        for d in deliveries
    )
