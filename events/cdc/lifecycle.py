"""The connector's steps that need both Kafka Connect and the database.

`configure` (`cdc_connector register`) creates or updates the connector and resets
its stored offsets when they do not fit the slot; `stop_for_drop`,
`stored_for_count` and `count_unread` (`cdc_connector delete --drop-slot`) count what
the slot holds that Debezium has not sent. Each returns what it did or found; the
command reports it and decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection

from events.cdc import database
from events.cdc.connector import StoredOffset, stored_offset
from events.cdc.rest import ConnectClient, ConnectError


@dataclass(frozen=True)
class Unread:
    """Outbox events in the slot that Debezium has not sent."""

    count: int
    # False without a stored offset to tell what was sent: then an upper bound.
    exact: bool


def configure(client: ConnectClient, name: str, config: dict[str, str]) -> str | None:
    """Create or update the connector; reset its offsets if they are not the slot's.

    Return why the offsets were reset, or None. Decided from what Connect stored and
    where the slot is, not from whether this run created the slot: a run that failed
    after creating it leaves the next one a slot that exists and a connector whose
    offsets name an older slot's WAL (Debezium's task then fails: "no longer
    available on the server"). Offsets outlive their connector, so a new one is
    created STOPPED and checked before a task reads them. Resetting loses nothing the
    slot holds: Debezium then starts at the slot's confirmed position.
    """
    # The slot before the offsets: both only move forward, so an offset read after
    # the slot's position can't look older than it.
    slot = database.slot_position()
    status = client.status(name)
    if status is None:
        # Not PUT again afterwards: a PUT restarts a stopped connector, and a resume
        # right behind it pre-empts the restarted one's transition to STOPPED
        # (Connect logs "Failed to start connector", harmlessly).
        client.create_stopped(name, config)
    stored = stored_offset(client.offsets(name), connection.settings_dict["NAME"])
    mismatch = database.offsets_mismatch(stored, slot) if stored and slot else None
    if status is not None:
        running = status["connector"]["state"] != "STOPPED"
        if mismatch and running:
            # Its task must be gone before the reset, or its last offset commit could
            # land after the reset and bring the stale offsets back.
            client.stop(name)
            client.wait_stopped(name)
            database.wait_slot_inactive()
        try:
            client.put_config(name, config)
        except ConnectError:
            if mismatch and running:
                client.resume(name)  # as it was
            raise
        if not mismatch and running:
            return None  # running on offsets of its slot: only the config may change
        # Else stopped, maybe by a run that failed before it resumed: resume.
    if mismatch:
        client.reset_offsets(name)
    client.resume(name)
    return mismatch


def stop_for_drop(
    client: ConnectClient, name: str, status: dict[str, Any] | None
) -> bool:
    """Stop the connector (config and offsets kept) and wait until its task let go of
    the slot: a peek needs the slot to itself. Return whether the slot exists."""
    if status is not None:
        client.stop(name)
        client.wait_stopped(name)
    return database.wait_slot_inactive()


def stored_for_count(
    client: ConnectClient, name: str, status: dict[str, Any] | None
) -> StoredOffset | None:
    """The stopped connector's stored offset (final once its task let go of the
    slot), or None without a connector or with offsets the slot does not fit (an
    older slot's or another server's: they would pass unsent inserts off as sent)."""
    if status is None:
        return None
    stored = stored_offset(client.offsets(name), connection.settings_dict["NAME"])
    slot = database.slot_position()
    if stored is None or slot is None or database.offsets_mismatch(stored, slot):
        return None
    return stored


def count_unread(stored: StoredOffset | None) -> Unread:
    """Count the slot's outbox events the stopped connector has not sent.

    Its stored offset tells the inserts it already sent from those it has not (see
    `database.unread_events`); without one the count is an upper bound.
    """
    count = database.unread_events(
        committed_up_to=stored.resume_lsn if stored else None,
        tx_id=stored.tx_id if stored else None,
        sent_up_to=stored.sent_lsn if stored else None,
    )
    return Unread(count=count, exact=stored is not None)
