"""Writing events: `publish` puts an event in the outbox inside the caller's transaction.

With OUTBOX_RELAY=cdc (Debezium reads the outbox's inserts from the WAL) `publish` also
deletes the row it inserted, in the same transaction: the insert is in the WAL, which is
all Debezium reads, so the table stays empty and nothing has to clean it up. An event too
large for Kafka stays in the table instead, parked (see `publish`).
"""

from __future__ import annotations

import json
import re

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet
from django.utils import timezone

from events.core import headers as headers_
from events.core.conf import pipeline_settings
from events.core.tracing import current_trace_id, new_trace_id
from events.core.types import Event, new_envelope
from events.models import OutboxEvent

# First key of the two-key advisory lock space used for per-key publish ordering.
PUBLISH_LOCK_CLASS = 7_001
# In cdc mode every publish takes this lock shared, and `cdc_connector delete
# --drop-slot` exclusive from its count of the slot's unsent events to the drop: no
# event commits into a slot that is about to be dropped uncounted.
SLOT_DROP_LOCK = (7_006, 0)


# Kafka's record batch header (61 bytes) plus a record's own varints (length,
# attributes, timestamp and offset deltas, key and value lengths, header count), each
# at its widest: with these, the estimate is never below the producer's own.
RECORD_OVERHEAD_BYTES = 61 + 40
# The two varints (name length, value length) of each header, at their widest.
HEADER_OVERHEAD_BYTES = 10


class OutboxError(RuntimeError):
    """Publishing was attempted where it cannot be atomic, or where it would be lost."""


def cdc_slot_name(database: str) -> str:
    """Return the replication slot Debezium reads `database`'s outbox through.

    One slot per database (so test databases never share one); PostgreSQL allows
    lower-case letters, digits and underscores, at most 63 characters.
    """
    return ("outbox_" + re.sub(r"[^a-z0-9_]", "_", database.lower()))[:63]


def record_size(key: str, payload: str, headers: dict[str, str]) -> int:
    """Return an upper bound of the bytes Kafka counts for one record of this event."""
    size = RECORD_OVERHEAD_BYTES + len(key.encode()) + len(payload.encode())
    for name, value in headers.items():
        size += HEADER_OVERHEAD_BYTES + len(name.encode()) + len(value.encode())
    return size


def publish(event: Event, *, headers: dict[str, str] | None = None) -> OutboxEvent:
    """Insert `event` into the outbox as part of the current transaction.

    Refuses to run outside `transaction.atomic()`: an event written in autocommit mode
    would be committed on its own, apart from the change it announces (a dual write).

    Takes a transaction-scoped advisory lock on (topic, key) before the row gets its id,
    so two transactions that publish for the same key commit in id order; the relay
    relies on that to keep per-key order without knowing commit timestamps (and in cdc
    mode the WAL, which Debezium reads in commit order, has them in that order too).

    With OUTBOX_RELAY=cdc the row is deleted again before returning (Debezium captured
    the insert from the WAL), unless its record would exceed OUTBOX_MAX_MESSAGE_BYTES:
    such a row stays, parked with the reason, like a row the polling relay parks. It
    refuses to publish while the database has no replication slot for Debezium.
    """
    if not connection.in_atomic_block:
        raise OutboxError(
            "events.publish() must be called inside transaction.atomic(), so that the "
            "event commits together with the change it announces"
        )
    conf = pipeline_settings()
    topic = conf.topic(event.stream)
    key = event.key
    with connection.cursor() as cursor:
        if conf.cdc:
            _lock_and_check_slot(cursor, f"{topic}/{key}")
        else:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [PUBLISH_LOCK_CLASS, f"{topic}/{key}"],
            )
    event_id, envelope = new_envelope(event)
    all_headers = {
        headers_.EVENT_ID: str(event_id),
        headers_.EVENT_TYPE: event.event_type,
        headers_.SCHEMA_VERSION: str(event.version),
        headers_.TRACE_ID: current_trace_id() or new_trace_id(),
    }
    if headers:
        all_headers.update(headers)
    row = OutboxEvent(
        event_id=event_id,
        event_type=event.event_type,
        schema_version=event.version,
        topic=topic,
        key=key,
        payload=envelope,
        headers=all_headers,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
    )
    if conf.cdc:
        _write_captured(row, conf.max_message_bytes)
    else:
        row.save(force_insert=True)
    return row


def _write_captured(row: OutboxEvent, max_message_bytes: int) -> None:
    """Insert `row` for Debezium to capture and delete it again, or park it if too large.

    The Connect producer cannot park a record the broker refuses, as the polling relay
    does: the task would fail and stop. So a row whose record would exceed
    OUTBOX_MAX_MESSAGE_BYTES stays here, parked with the reason; the publication's row
    filter (parked_at IS NULL) leaves it out of the stream.
    """
    # The bytes Debezium will send: the column's text, as JSONTextField writes it.
    payload = json.dumps(row.payload, allow_nan=False)
    size = record_size(row.key, payload, row.headers)
    if size > max_message_bytes:
        row.parked_at = timezone.now()
        row.last_error = (
            f"not captured (OUTBOX_RELAY=cdc): the record is about {size} bytes, "
            f"over OUTBOX_MAX_MESSAGE_BYTES={max_message_bytes}"
        )
        row.save(force_insert=True)
        return
    row.save(force_insert=True)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_outboxevent WHERE id = %s", [row.pk])


def _lock_and_check_slot(cursor: CursorWrapper, lock_key: str) -> None:
    """Take the per-key lock; refuse to publish when no slot retains the WAL.

    In cdc mode the row is deleted at once: the event exists only in the WAL, and only a
    replication slot keeps that WAL until Debezium has read it. Without the slot
    (`manage.py cdc_connector register` creates it) the event would be lost, so the
    business transaction fails instead. Same round trip as the lock, and the shared
    SLOT_DROP_LOCK: a slot being dropped is not published into.
    """
    slot = cdc_slot_name(connection.settings_dict["NAME"])
    cursor.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s)),"
        " pg_advisory_xact_lock_shared(%s, %s),"
        " EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s"
        # A slot still being created is listed before it is consistent: a transaction
        # committing then is not decoded. Its confirmed position is set once it is.
        " AND database = current_database() AND confirmed_flush_lsn IS NOT NULL)",
        [PUBLISH_LOCK_CLASS, lock_key, *SLOT_DROP_LOCK, slot],
    )
    found = cursor.fetchone()
    if not (found and found[2]):
        raise OutboxError(
            f"OUTBOX_RELAY=cdc but the replication slot {slot!r} does not exist, so "
            "nothing would capture this event; run `manage.py cdc_connector register`"
        )


def unpark(rows: QuerySet[OutboxEvent]) -> int:
    """Hand the parked rows among `rows` to the relay again; return how many.

    Polling: clear `parked_at`, and the relay reads them. cdc: Debezium sees only
    inserts, so each row is inserted anew (then deleted, as by `publish`) in one
    transaction; a row still over OUTBOX_MAX_MESSAGE_BYTES stays parked.
    """
    conf = pipeline_settings()
    parked = rows.filter(parked_at__isnull=False)
    if not conf.cdc:
        return parked.update(parked_at=None, last_error="")
    count = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for row in parked.select_for_update():
            # As `publish`: the key's order, and no delete that nothing would capture.
            _lock_and_check_slot(cursor, f"{row.topic}/{row.key}")
            size = record_size(
                row.key, json.dumps(row.payload, allow_nan=False), row.headers
            )
            if size > conf.max_message_bytes:
                continue
            row.delete()
            row.pk = None
            row.parked_at = None
            row.last_error = ""
            _write_captured(row, conf.max_message_bytes)
            count += 1
    return count
