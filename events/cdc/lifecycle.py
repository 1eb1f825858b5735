"""The connector's steps that need both Kafka Connect and the database.

`configure` (`cdc_connector register`) creates or updates the connector and resets
its stored offsets when they do not fit the slot; `stop_and_count_unread`
(`cdc_connector delete --drop-slot`) counts what the slot holds that Debezium has not
sent. Each returns what it did or found; the command reports it and decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection

from events.cdc import database
from events.cdc.connector import stored_offset
from events.cdc.rest import ConnectClient


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
    status = client.status(name)
    if status is None:
        # Not PUT again afterwards: a PUT restarts a stopped connector, and a resume
        # right behind it pre-empts the restarted one's transition to STOPPED
        # (Connect logs "Failed to start connector", harmlessly).
        client.create_stopped(name, config)
    stored = stored_offset(client.offsets(name), connection.settings_dict["NAME"])
    mismatch = database.offsets_mismatch(stored.resume_lsn) if stored else None
    if status is not None:
        stopped = status["connector"]["state"] == "STOPPED"
        if mismatch and not stopped:
            client.stop(name)
        client.put_config(name, config)
        if not mismatch and not stopped:
            return None  # running on offsets of its slot: only the config may change
        # Else stopped, maybe by a run that failed before it resumed: resume.
    if mismatch:
        client.reset_offsets(name)
    client.resume(name)
    return mismatch


def stop_and_count_unread(
    client: ConnectClient, name: str, status: dict[str, Any] | None
) -> Unread | None:
    """Stop the connector and count the slot's unsent events; None without a slot.

    A peek needs the slot to itself, so the connector (if any) is stopped first,
    which keeps its config and offsets. Its stored offset tells the inserts it
    already sent from those it has not (see `database.unread_events`).
    """
    if status is not None:
        client.stop(name)
        client.wait_stopped(name)
    if not database.wait_slot_inactive():
        return None
    offsets = client.offsets(name) if status is not None else {}
    stored = stored_offset(offsets, connection.settings_dict["NAME"])
    count = database.unread_events(
        committed_up_to=stored.resume_lsn if stored else None,
        tx_id=stored.tx_id if stored else None,
        sent_up_to=stored.sent_lsn if stored else None,
    )
    return Unread(count=count, exact=stored is not None)
