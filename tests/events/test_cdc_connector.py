"""`cdc_connector register` and `delete` against the real Kafka Connect worker.

Marked `cdc` (`make test-cdc`, which starts Connect). Each test leaves no connector and
no slot behind (`CdcRelay.stop`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from events.cdc import database
from events.cdc.connector import connector_name
from events.cdc.rest import ConnectClient
from events.core.conf import PipelineSettings, pipeline_settings
from tests.events.relay_modes import CdcRelay
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
