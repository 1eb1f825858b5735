"""Running handlers on decoded events: inbox rows and handler effects in one transaction.

Work comes as units (one event x one handler). `run_optimistically` runs a run of
units in ONE transaction with ONE inbox insert for all of them and no savepoint per
unit, which is what makes a batch cheap; at the first failure it rolls everything back
and says which unit failed, so the caller (events.consumer.execution) re-runs the units
before it and deals with the failed one alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from typing import Any

import orjson
from django.db import transaction
from django.utils import timezone

from events.consumer.database_faults import blame_the_database
from events.consumer.execution import Failure
from events.consumer.units import Unit, audit_unit
from events.core.bulk_insert import bulk_insert, insert_skipping_present
from events.core.tracing import reset_trace_id, set_trace_id
from events.models import InboxDuplicateCount
from events.observability import audit, metrics

logger = logging.getLogger("events.consumer")

# The rows travel as one JSON parameter: Django's client-side parameter binding quotes
# every element of array parameters in Python (see events.core.bulk_insert).
INBOX_INSERT_SQL = """
    INSERT INTO events_inboxentry
        (event_id, handler, topic, partition, "offset", attempt, processed_at)
    SELECT r.event_id, r.handler, r.topic, r.partition, r."offset", r.attempt, now()
    FROM json_to_recordset(%s::json) AS r(
        event_id uuid, handler text, topic text, partition int, "offset" bigint,
        attempt int)
"""
INBOX_SKIP_PRESENT = (
    "ON CONFLICT (event_id, handler) DO NOTHING RETURNING event_id, handler"
)


def run_optimistically(units: list[Unit], *, batches: bool = True) -> Failure | None:
    """Run `units` in one transaction; on the first failure roll back and report it.

    Returns None when everything committed (handled, or recognised by the inbox as
    already handled). A failed batch-handler call is reported with index None: the
    caller runs the same units again with `batches=False` to find the failing event.
    """
    processed: list[Unit] = []
    duplicates: list[Unit] = []
    try:
        with transaction.atomic():
            new = _claim_inbox([u for u in units if u.error is None])
            groups: dict[str, list[tuple[int, Unit]]] = {}
            for index, unit in enumerate(units):
                if unit.error is not None:
                    raise _Failed(index, unit.error)
                assert unit.envelope is not None and unit.spec is not None
                if new is not None:
                    pair = (unit.envelope.event_id, unit.spec.name)
                    if pair not in new:
                        duplicates.append(unit)
                        continue
                    # A redelivery inside the same batch is a duplicate of this one.
                    new.discard(pair)
                if batches and unit.spec.batch:
                    groups.setdefault(unit.spec.name, []).append((index, unit))
                    continue
                error = _call(unit)
                if error is not None:
                    raise _Failed(index, error)
                processed.append(unit)
            for members in groups.values():
                error = _call_batch([unit for _, unit in members])
                if error is not None:
                    raise _Failed(None, error)
                processed.extend(unit for _, unit in members)
    except _Failed as failed:
        return Failure(failed.index, failed.error)
    _count(metrics.PROCESSED, processed)
    _count(metrics.DUPLICATES, duplicates)
    if audit.enabled():
        for unit in processed:
            audit_unit(audit.PROCESSED, unit)
        for unit in duplicates:
            audit_unit(audit.DUPLICATE, unit)
    return None


def _count(counter: Any, units: list[Unit]) -> None:
    # One labels() lookup per (topic, handler) and batch, not per event.
    counts: dict[tuple[str, str], int] = {}
    for unit in units:
        pair = (unit.where.topic, unit.handler_name)
        counts[pair] = counts.get(pair, 0) + 1
    for (topic, handler_name), count in counts.items():
        counter.labels(topic, handler_name).inc(count)


def _claim_inbox(units: list[Unit]) -> set[tuple[uuid.UUID, str]] | None:
    """Insert the units' inbox rows; return the (event id, handler) pairs that are new,
    or None when all of them are (the common case: no redelivery in the batch).

    If another consumer is handling one of these events right now (a rebalance
    overlap), the insert waits for its transaction and then sees its row.
    """
    if not units:
        return set()
    rows = [
        {
            "event_id": unit.envelope.event_id,  # type: ignore[union-attr]
            "handler": unit.handler_name,
            "topic": unit.where.topic,
            "partition": unit.where.partition,
            "offset": unit.where.offset,
            "attempt": unit.where.attempt,
        }
        for unit in units
    ]
    inserted = insert_skipping_present(
        INBOX_INSERT_SQL,
        INBOX_SKIP_PRESENT,
        [orjson.dumps(rows).decode()],
        many=len(rows) > 1,
    )
    if inserted is None:
        return None
    new = {(event_id, handler) for event_id, handler in inserted}
    _count_absorbed(Counter(unit.handler_name for unit in units), new)
    return new


def _count_absorbed(claimed: Counter[str], new: set[tuple[uuid.UUID, str]]) -> None:
    """Add the batch's skipped inbox rows to InboxDuplicateCount, in its transaction."""
    for _, handler in new:
        claimed[handler] -= 1
    # One row per batch that absorbed redeliveries: appended, never updated, so
    # consumers absorbing at the same time wait for nobody (a shared counter row would
    # serialise them, and could deadlock two batches that touch two handlers' rows).
    now = timezone.now()
    rows = [
        {"handler": h, "count": n, "counted_at": now}
        for h, n in claimed.items()
        if n > 0
    ]
    if rows:
        bulk_insert(InboxDuplicateCount, rows)


def _call(unit: Unit) -> BaseException | None:
    assert unit.envelope is not None and unit.spec is not None
    token = set_trace_id(unit.where.trace_id)
    started = time.perf_counter()
    try:
        if unit.spec.batch:
            unit.spec.func([unit.delivery()])
        else:
            unit.spec.func(unit.delivery())
    except Exception as exc:  # noqa: BLE001 - every handler failure is classified
        if blame_the_database(exc, (unit.envelope.event_id, unit.spec.name)):
            raise
        logger.warning(
            "handler %s failed on %s %s (attempt %d): %s: %s",
            unit.spec.name,
            unit.envelope.event_type,
            unit.envelope.event_id,
            unit.where.attempt,
            type(exc).__name__,
            exc,
        )
        return exc
    finally:
        metrics.HANDLER_SECONDS.labels(unit.spec.name).observe(
            time.perf_counter() - started
        )
        reset_trace_id(token)
    return None


def _call_batch(units: list[Unit]) -> BaseException | None:
    spec = units[0].spec
    assert spec is not None
    started = time.perf_counter()
    try:
        spec.func([unit.delivery() for unit in units])
    except Exception as exc:  # noqa: BLE001 - retried one event at a time
        first = units[0].envelope
        if blame_the_database(exc, (first.event_id if first else None, spec.name)):
            raise
        logger.warning(
            "batch handler %s failed on %d events (%s: %s); retrying them one by one",
            spec.name,
            len(units),
            type(exc).__name__,
            exc,
        )
        return exc
    finally:
        metrics.HANDLER_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
    return None


class _Failed(Exception):
    def __init__(self, index: int | None, error: BaseException) -> None:
        self.index = index
        self.error = error
