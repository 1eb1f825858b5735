"""Running handlers on decoded events: inbox rows and handler effects in one transaction.

Work comes as units (one event x one handler). `run_optimistically` runs a run of
units in ONE transaction with ONE inbox insert for all of them and no savepoint per
unit, which is what makes a batch cheap; at the first failure it rolls everything back
and says which unit failed, so the caller re-runs the units before it and deals with
the failed one alone. Every unit thus gets its own outcome, and a failure is seen exactly once.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connection, transaction
from psycopg import errors as pg_errors

from events.core.bulk_insert import insert_skipping_present
from events.core.headers import Origin, origin_of
from events.core.kafka import Message
from events.core.registry import HandlerSpec
from events.core.types import Envelope, PoisonMessage
from events.observability import audit, metrics
from events.observability.tracing import reset_trace_id, set_trace_id

logger = logging.getLogger(__name__)

# The rows travel as one JSON parameter: Django's client-side parameter binding quotes
# every element of array parameters in Python, which was a tenth of a consumer's time.
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

# PostgreSQL's answers to two transactions getting in each other's way: one is rolled
# back and may simply run again.
CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

# One row per batch that absorbed redeliveries: appended, never updated, so consumers
# absorbing at the same time wait for nobody (a shared counter row would serialise
# them, and could deadlock two batches that touch two handlers' rows in turn).
COUNT_ABSORBED_SQL = """
    INSERT INTO events_inboxduplicatecount (handler, count, counted_at)
    SELECT r.handler, r.count, now()
    FROM json_to_recordset(%s::json) AS r(handler text, count bigint)
"""
# A handler whose work breaks the database connection or deadlocks this many times on
# one event is the cause, not the victim: its next such failure is treated as its own
# (retry topic or in place, then the DLQ), so it cannot stall its partitions forever.
DATABASE_FAULT_LIMIT = 5

# Exceptions no retry can fix: the event goes to the DLQ at once.
POISON_EXCEPTIONS: tuple[type[BaseException], ...] = (PoisonMessage, ValidationError)

_current_event_id: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar(
    "current_event_id", default=None
)


def current_event_id() -> uuid.UUID | None:
    """The id of the event the running handler was given (None outside handlers)."""
    return _current_event_id.get()


def is_poison(error: BaseException) -> bool:
    return isinstance(error, POISON_EXCEPTIONS)


# Coordinates and Unit are built for every consumed message: plain slotted dataclasses,
# because a frozen dataclass costs about five times as much to build.
@dataclass(slots=True)
class Coordinates:
    """Where a unit's message was read, and which attempt of its handler this is."""

    topic: str
    partition: int
    offset: int
    attempt: int
    trace_id: str | None

    def next_attempt(self) -> Coordinates:
        return Coordinates(
            self.topic, self.partition, self.offset, self.attempt + 1, self.trace_id
        )


@dataclass(slots=True)
class Unit:
    """One handler's work on one message. `spec` is None for an undecodable message,
    whose `error` is set from the start."""

    message: Message
    stream: str
    headers: dict[str, str]
    where: Coordinates
    envelope: Envelope | None = None
    spec: HandlerSpec | None = None
    error: BaseException | None = None
    seq: int = 0  # which planned message this unit belongs to
    handler_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.handler_name = self.spec.name if self.spec else ""

    @property
    def origin(self) -> Origin:
        """Where the message was first consumed: only retries and dead letters ask."""
        where = self.where
        return origin_of(
            self.headers,
            where.topic,
            where.partition,
            where.offset,
            self.message.timestamp()[1],
        )


@dataclass(frozen=True)
class Failure:
    index: int | None  # None: a batch call failed, the culprit is not known yet
    error: BaseException


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


def audit_unit(outcome: str, unit: Unit, error: BaseException | None = None) -> None:
    """Write the audit line of one unit's outcome (see events.observability.audit)."""
    audit.audit(
        outcome,
        event_id=unit.envelope.event_id if unit.envelope else None,
        event_type=unit.envelope.event_type if unit.envelope else None,
        topic=unit.where.topic,
        partition=unit.where.partition,
        offset=unit.where.offset,
        trace_id=unit.where.trace_id,
        handler=unit.handler_name or None,
        attempt=unit.where.attempt,
        error=error,
        level=logging.WARNING if outcome == audit.DEAD_LETTERED else logging.INFO,
    )


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
    rows = [{"handler": h, "count": n} for h, n in claimed.items() if n > 0]
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(COUNT_ABSORBED_SQL, [orjson.dumps(rows).decode()])


_database_faults: dict[tuple[Any, str], int] = {}
_database_faults_lock = threading.Lock()


def _blame_the_database(exc: BaseException, key: tuple[Any, str]) -> bool:
    """Whether to re-run the batch for `exc` (see database_fault), counting per event
    and handler so a handler that causes it gives up after DATABASE_FAULT_LIMIT."""
    if not database_fault(exc):
        return False
    with _database_faults_lock:
        if len(_database_faults) > 10_000:  # only recent faults matter
            _database_faults.clear()
        _database_faults[key] = _database_faults.get(key, 0) + 1
        if _database_faults[key] <= DATABASE_FAULT_LIMIT:
            return True
        del _database_faults[key]
    logger.error(
        "%s broke the database session %d times on %s: treating it as the handler's "
        "failure",
        key[1],
        DATABASE_FAULT_LIMIT + 1,
        key[0],
    )
    return False


def database_fault(exc: BaseException) -> bool:
    """Whether `exc` is the database's trouble rather than the event's.

    Two kinds: the connection broke under the handler (a restart, a cut), or
    PostgreSQL rolled the transaction back to break a deadlock or a serialization
    conflict with another consumer's batch. Neither is the event's failure: retrying
    it on a retry topic would put it behind later events of its key, and a restart
    longer than the backoffs would dead-letter good events. The error goes up instead;
    the runner consumes the batch again (see ConsumerRunner._process_batch).
    """
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if isinstance(exc.__cause__, CONFLICTS):
        return True
    raw = connection.connection
    return raw is None or raw.closed or bool(getattr(raw, "broken", False))


def _call(unit: Unit) -> BaseException | None:
    assert unit.envelope is not None and unit.spec is not None
    token = set_trace_id(unit.where.trace_id)
    event_token = _current_event_id.set(unit.envelope.event_id)
    started = time.perf_counter()
    try:
        if unit.spec.batch:
            unit.spec.func([unit.envelope])
        else:
            unit.spec.func(unit.envelope.event)
    except Exception as exc:  # noqa: BLE001 - every handler failure is classified
        if _blame_the_database(exc, (unit.envelope.event_id, unit.spec.name)):
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
        _current_event_id.reset(event_token)
    return None


def _call_batch(units: list[Unit]) -> BaseException | None:
    spec = units[0].spec
    assert spec is not None
    started = time.perf_counter()
    try:
        spec.func([unit.envelope for unit in units])
    except Exception as exc:  # noqa: BLE001 - retried one event at a time
        first = units[0].envelope
        if _blame_the_database(exc, (first.event_id if first else None, spec.name)):
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
