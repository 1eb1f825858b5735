"""`cdc_connector register` and `delete` against the real Kafka Connect worker.

Marked `cdc` (`make test-cdc`, which starts Connect). Each test leaves no connector and
no slot behind (`CdcRelay.stop`). Events go through the real `events.publish` and are
read back from the broker.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from events import publish
from events.cdc import database
from events.cdc.connector import connector_name
from events.cdc.rest import ConnectClient
from events.core.conf import PipelineSettings, pipeline_settings
from tests.events.relay_modes import CdcRelay
from tests.events.test_cdc_mode import created
from tests.kafka_helpers import header, read_topic
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.kafka,
    pytest.mark.cdc,
]


@pytest.fixture
def relay(fresh_topics: PipelineSettings, settings: Any) -> Iterator[CdcRelay]:
    settings.OUTBOX_RELAY = "cdc"
    harness = CdcRelay()
    try:
        yield harness
    finally:
        print(f"---- connect log ----\n{harness.log()}")
        harness.stop()


@pytest.fixture
def client() -> ConnectClient:
    return ConnectClient(pipeline_settings().cdc_connect_url)


@pytest.fixture
def name() -> str:
    return connector_name(connection.settings_dict["NAME"])


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("cdc_connector", *args, stdout=out)
    return out.getvalue()


def stop(client: ConnectClient, name: str) -> None:
    """Stop the connector (KIP-875) and wait until its task has let go of the slot."""
    client.stop(name)
    wait_until(
        lambda: (
            not client.status(name)["tasks"] and not database.slot_state()["active"]
        ),
        what="the connector stopped",
    )


def arrived(expected: int) -> list[str]:
    topic = pipeline_settings().topic("reservation")
    messages = read_topic(topic, expected=expected, timeout=60)
    return [str(header(m, "event_id")) for m in messages]


def test_cdc_delete_returns_once_the_task_has_let_go_of_the_slot(
    relay: CdcRelay, client: ConnectClient, name: str
) -> None:
    """DELETE answers before the worker has stopped the task: a register (or a slot
    drop) right behind it met a task of the old connector still streaming."""
    relay.start()
    # RUNNING is reported a moment before the task opens its replication stream.
    wait_until(lambda: database.slot_state()["active"], what="the task streaming")

    command("delete")

    assert client.status(name) is None
    assert database.slot_state()["active"] is False  # kept, but nobody reads it


def test_cdc_register_retried_after_a_new_slot_resets_the_older_slots_offsets(
    relay: CdcRelay, client: ConnectClient, name: str
) -> None:
    """A first register created a new slot and failed before it configured the
    connector: the retry finds the slot existing, and offsets Connect kept from the
    older slot of that name, which Debezium cannot resume from."""
    relay.start()
    with transaction.atomic():
        first = publish(created(1))
    assert arrived(1) == [str(first.event_id)]
    command("delete")  # Connect keeps the connector's offsets
    database.drop_slot()  # the older slot goes (say, dropped by hand)
    database.ensure_publication()  # what the failed first run of register got done
    database.ensure_slot()

    out = command("register", "--wait", "60")

    assert f"reset the stored offsets of {name}" in out
    assert "an older slot's" in out
    with transaction.atomic():
        second = publish(created(2))
    assert arrived(2) == [str(first.event_id), str(second.event_id)]
    # Its own offsets now: registering again keeps them.
    assert "reset" not in command("register", "--wait", "60")


def test_cdc_delete_drop_slot_refuses_while_events_are_unsent_unless_told(
    relay: CdcRelay, client: ConnectClient, name: str
) -> None:
    relay.start()
    with transaction.atomic():
        sent = publish(created(1))
    assert arrived(1) == [str(sent.event_id)]
    stop(client, name)  # as if its task had failed: nothing reads the slot
    with transaction.atomic():
        unsent = [publish(created(2)), publish(created(3))]

    with pytest.raises(CommandError, match="holds 2 outbox events that Debezium"):
        command("delete", "--drop-slot")

    assert database.slot_state() is not None  # nothing dropped, nothing reset
    assert client.status(name)["connector"]["state"] == "STOPPED"  # as it was
    client.resume(name)
    ids = [str(sent.event_id), *(str(row.event_id) for row in unsent)]
    assert sorted(arrived(3)) == sorted(ids)
    # Sent: its stored offset says so, although the slot has not moved past the last
    # transaction yet (Debezium confirms at its next offset flush).
    out = command("delete", "--drop-slot")
    assert "dropped replication slot" in out

    relay.start()
    stop(client, name)
    with transaction.atomic():
        publish(created(4))
    out = command("delete", "--drop-slot", "--discard-unread")
    assert "discarding 1 outbox events" in out
    assert database.slot_state() is None
    assert client.status(name) is None
