"""The publication and the replication slot Debezium reads the outbox through.

Created by the project, not by Debezium (`publication.autocreate.mode=disabled`), so the
publication has the row filter and the slot exists before any event is published: in
cdc mode `publish` refuses to write while the slot is missing, since an event whose
row is deleted at once exists only in WAL that a slot retains.
"""

from __future__ import annotations

import logging
import time

from django.db import connection

from events.core.outbox import cdc_slot_name

logger = logging.getLogger(__name__)

PUBLICATION = "outbox_events"
OUTBOX_TABLE = "events_outboxevent"


def slot_name() -> str:
    """Return this database's slot (one per database: test databases never share)."""
    return cdc_slot_name(connection.settings_dict["NAME"])


def ensure_publication() -> bool:
    """Create the outbox publication if missing; return whether it was created.

    Only inserts of unparked rows are published: deletes (every row's, in cdc mode)
    and updates never reach the stream, so there are no tombstones, and a parked row
    (too large for Kafka) stays out of it.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [PUBLICATION])
        if cursor.fetchone():
            return False
        cursor.execute(
            f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {OUTBOX_TABLE}"
            " WHERE (parked_at IS NULL) WITH (publish = 'insert')"
        )
    logger.info("created publication %s", PUBLICATION)
    return True


def ensure_slot() -> bool:
    """Create this database's pgoutput slot if missing; return whether it was created.

    After the publication: pgoutput looks the publication up as of the WAL it decodes.
    From this point on the WAL is retained until Debezium confirms it.
    """
    name = slot_name()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]
        )
        if cursor.fetchone():
            return False
        cursor.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name]
        )
    logger.info("created replication slot %s", name)
    return True


def slot_state() -> dict[str, object] | None:
    """Return the slot's activity and how much WAL it retains, or None if missing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT active, confirmed_flush_lsn::text,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            [slot_name()],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return {
        "active": row[0],
        "confirmed_flush_lsn": row[1],
        "retained_wal_bytes": row[2],
    }


def drop_slot(*, timeout: float = 30.0) -> bool:
    """Drop this database's slot once no connector reads it; return whether it existed.

    An abandoned slot retains WAL forever. A connector just deleted may hold the slot a
    few seconds longer (its task stops asynchronously): wait for it, up to `timeout`.
    """
    name = slot_name()
    deadline = time.monotonic() + timeout
    while True:
        state = slot_state()
        if state is None:
            return False
        if not state["active"]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_drop_replication_slot(%s)", [name])
            logger.info("dropped replication slot %s", name)
            return True
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"replication slot {name} is still in use after {timeout:.0f} s; "
                "delete the connector first (manage.py cdc_connector delete)"
            )
        time.sleep(0.2)
