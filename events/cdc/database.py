"""The publication and the replication slot Debezium reads the outbox through.

Created by the project, not by Debezium (`publication.autocreate.mode=disabled`), so the
publication has the row filter and the slot exists before any event is published: in
cdc mode `publish` refuses to write while the slot is missing, since an event whose
row is deleted at once exists only in WAL that a slot retains.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from django.db import DatabaseError, connection
from django.db.backends.utils import CursorWrapper

from events.core.outbox import SLOT_DROP_LOCK, cdc_slot_name

logger = logging.getLogger(__name__)

PUBLICATION = "outbox_events"
OUTBOX_TABLE = "events_outboxevent"
# What the publication streams: inserts of unparked rows of the outbox, nothing else.
ROW_FILTER = "(parked_at IS NULL)"
PUBLISH = "insert"
# pg_publication's flags, in the order ensure_publication selects them.
PUBLISHED_OPS = ("insert", "update", "delete", "truncate")


class CdcDatabaseError(RuntimeError):
    """The publication or the slot is not as the connector needs it; says what to do."""


@dataclass(frozen=True)
class SlotPosition:
    """Where the slot is in the WAL, and where the WAL ends (LSNs as integers)."""

    restart_lsn: int
    confirmed_flush_lsn: int
    current_wal_lsn: int


def lsn_text(lsn: int) -> str:
    """Format an LSN as PostgreSQL prints it (`F/2D2B1818`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def slot_name() -> str:
    """Return this database's slot (one per database: test databases never share)."""
    return cdc_slot_name(connection.settings_dict["NAME"])


def ensure_publication() -> list[str]:
    """Create the outbox publication, or repair one that differs; return the changes.

    Only inserts of unparked rows are published: deletes (every row's, in cdc mode)
    and updates never reach the stream, so there are no tombstones, and a parked row
    (too large for Kafka) stays out of it. An existing publication of this name is
    the project's (nothing else uses the name), so one that an older version or a
    hand left different is put right rather than refused: a refusal would only ask
    the operator to run the same ALTER. pgoutput reads the publication as of the WAL
    it decodes, so the repair applies to what is written after it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate"
            " FROM pg_publication WHERE pubname = %s",
            [PUBLICATION],
        )
        found = cursor.fetchone()
        if found is None:
            cursor.execute(
                f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {OUTBOX_TABLE}"
                f" WHERE {ROW_FILTER} WITH (publish = '{PUBLISH}')"
            )
            logger.info("created publication %s", PUBLICATION)
            return [f"created publication {PUBLICATION}"]
        all_tables, *flags = found
        if all_tables:
            raise CdcDatabaseError(
                f"publication {PUBLICATION} is FOR ALL TABLES, which cannot be altered "
                f"to one table: DROP PUBLICATION {PUBLICATION} and run register again"
            )
        changes = []
        published = [op for op, on in zip(PUBLISHED_OPS, flags, strict=True) if on]
        if published != [PUBLISH]:
            changes.append(
                (
                    f"ALTER PUBLICATION {PUBLICATION} SET (publish = '{PUBLISH}')",
                    f"publish: {', '.join(published) or 'nothing'} -> {PUBLISH}",
                )
            )
        tables = _published_tables(cursor)
        wanted = [f"public.{OUTBOX_TABLE} WHERE {ROW_FILTER}"]
        if tables != wanted:
            changes.append(
                (
                    f"ALTER PUBLICATION {PUBLICATION} SET TABLE {OUTBOX_TABLE}"
                    f" WHERE {ROW_FILTER}",
                    f"tables: {'; '.join(tables) or 'none'} -> {wanted[0]}",
                )
            )
        for statement, change in changes:
            try:
                cursor.execute(statement)
            except DatabaseError as error:
                raise CdcDatabaseError(
                    f"publication {PUBLICATION} differs ({change}) and cannot be "
                    f"repaired ({error}); as its owner, run: {statement}"
                ) from error
            logger.warning("repaired publication %s: %s", PUBLICATION, change)
    return [f"repaired publication {PUBLICATION}: {change}" for _, change in changes]


def _published_tables(cursor: CursorWrapper) -> list[str]:
    """The publication's tables, each with its row filter and column list if any."""
    cursor.execute(
        "SELECT t.schemaname || '.' || t.tablename"
        " || coalesce(' WHERE ' || t.rowfilter, '')"
        " || CASE WHEN r.prattrs IS NULL THEN '' ELSE ' (a column list)' END"
        " FROM pg_publication_tables t"
        " JOIN pg_publication p ON p.pubname = t.pubname"
        " LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid"
        " AND r.prrelid = (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))"
        "::regclass"
        " WHERE t.pubname = %s ORDER BY 1",
        [PUBLICATION],
    )
    return [row[0] for row in cursor.fetchall()]


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


def slot_position() -> SlotPosition | None:
    """Return where this database's slot is in the WAL, or None if it is missing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (restart_lsn - '0/0')::bigint, (confirmed_flush_lsn - '0/0')::bigint,"
            " (pg_current_wal_lsn() - '0/0')::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            [slot_name()],
        )
        row = cursor.fetchone()
    return None if row is None else SlotPosition(*row)


def offsets_mismatch(stored: StoredPosition, slot: SlotPosition) -> str | None:
    """Say why Debezium cannot resume `slot` from the `stored` offset, or None.

    As Debezium's own check at its task's start: it refuses an offset whose last
    sent change (`lsn_proc`) is before the slot's restart_lsn (its task fails: "no
    longer available on the server"), an older slot's of this name, which a new
    slot never has WAL for. One beyond the end of this server's WAL is another
    server's: Debezium would skip every change until the WAL got there.
    """
    if stored.sent_lsn < slot.restart_lsn:
        return (
            f"they were sent up to {lsn_text(stored.sent_lsn)}, before where the slot"
            f" {slot_name()} starts ({lsn_text(slot.restart_lsn)}): an older slot's"
        )
    if stored.resume_lsn > slot.current_wal_lsn:
        return (
            f"they resume at {lsn_text(stored.resume_lsn)}, past the end of this"
            f" server's WAL ({lsn_text(slot.current_wal_lsn)}): another server's"
        )
    return None


class StoredPosition(Protocol):
    """What `offsets_mismatch` reads of a stored offset (events.cdc.connector's)."""

    @property
    def resume_lsn(self) -> int: ...

    @property
    def sent_lsn(self) -> int: ...


def wait_slot_inactive(*, timeout: float = 30.0) -> bool:
    """Wait until no connection reads this database's slot; False if it is missing.

    A connector's task lets go of the slot asynchronously after a stop or a delete
    (tens of milliseconds here): until then the slot can be neither peeked at nor
    dropped, and a new task of the same name would find it busy.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = slot_state()
        if state is None:
            return False
        if not state["active"]:
            return True
        if time.monotonic() > deadline:
            raise CdcDatabaseError(
                f"replication slot {slot_name()} is still in use after {timeout:.0f} s;"
                " delete the connector first (manage.py cdc_connector delete)"
            )
        time.sleep(0.05)


# The slot's changes through the publication, grouped by transaction: an insert is
# sent if its transaction committed at or before the stored commit position, or if it
# is in the transaction the stored offset is in (Debezium's txId) at or before the
# stored event position. Transactions are decoded in commit order while their inserts'
# own positions interleave, so an insert's position alone says nothing.
UNREAD_SQL = """
    WITH changes AS (
        SELECT (lsn - '0/0')::bigint AS lsn, xid::text::bigint AS xid,
            get_byte(data, 0) AS kind
        FROM pg_logical_slot_peek_binary_changes(
            %(slot)s, NULL, NULL, 'proto_version', '1', 'publication_names', %(pub)s
        )
    ), transactions AS (
        SELECT xid, max(lsn) FILTER (WHERE kind = ascii('C')) AS commit_lsn
        FROM changes GROUP BY xid
    )
    SELECT count(*) FROM changes c JOIN transactions t USING (xid)
    WHERE c.kind = ascii('I')
        AND NOT coalesce(t.commit_lsn <= %(committed)s::bigint, false)
        AND NOT coalesce(c.xid = %(tx)s::bigint AND c.lsn <= %(sent)s::bigint, false)
"""


def unread_events(
    *,
    committed_up_to: int | None = None,
    tx_id: int | None = None,
    sent_up_to: int | None = None,
) -> int:
    """Count the outbox inserts in the slot's WAL that Debezium has not sent.

    Peeks (`pg_logical_slot_peek_binary_changes`, which consumes nothing) at what
    pgoutput would stream through the publication, and counts its insert messages
    (type byte 'I'); the heartbeats' logical messages are not among them (pgoutput
    sends those only with `messages` on). The slot must be inactive. The decoding
    starts after the slot's confirmed_flush_lsn, which Debezium moves at its offset
    flushes, so what it sent last is still there. The connector's stored offset
    tells it apart: `committed_up_to` (`lsn_commit`: transactions committed up to
    there were sent whole), and `tx_id` with `sent_up_to` (`txId`, `lsn_proc`: the
    transaction it was in, whose commit it may have passed without storing it, and
    its last insert sent). Without them (no connector) the count may include what
    was sent: an upper bound. Reads all the WAL the slot retains, so it takes as long
    as that is large.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            UNREAD_SQL,
            {
                "slot": slot_name(),
                "pub": PUBLICATION,
                "committed": committed_up_to,
                "tx": tx_id,
                "sent": sent_up_to,
            },
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def publishing_paused(*, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold SLOT_DROP_LOCK exclusively: publishers in cdc mode (which take it shared)
    wait, and those in a transaction now commit first, so what the slot holds is
    final while the block counts it and drops the slot.

    Session-level, so outside a transaction only (an error inside one would leave
    the unlock undone). Waits at most `timeout_s` for the publishers in flight
    (OperationalError after): every publish queues behind a waiting exclusive lock.
    """
    assert not connection.in_atomic_block, "publishing_paused() in a transaction"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, false)", [f"{timeout_s}s"]
        )
        try:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", list(SLOT_DROP_LOCK))
        finally:
            cursor.execute("RESET lock_timeout")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(SLOT_DROP_LOCK))


def drop_slot(*, timeout: float = 30.0) -> bool:
    """Drop this database's slot once no connector reads it; return whether it existed.

    An abandoned slot retains WAL forever. A connector just deleted may hold the slot a
    little longer (its task stops asynchronously): wait for it, up to `timeout`. What
    the slot holds unread is lost with it (`unread_events` counts it first).
    """
    if not wait_slot_inactive(timeout=timeout):
        return False
    name = slot_name()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_drop_replication_slot(%s)", [name])
    logger.info("dropped replication slot %s", name)
    return True
