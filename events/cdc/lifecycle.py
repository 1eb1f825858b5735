"""The connector's steps that need both Kafka Connect and the database.

`configure` (`cdc_connector register`) creates or updates the connector and resets
its stored offsets when they do not fit the slot. It returns what it did; the command
reports it.
"""

from __future__ import annotations

from django.db import connection

from events.cdc import database
from events.cdc.connector import stored_offset
from events.cdc.rest import ConnectClient


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
