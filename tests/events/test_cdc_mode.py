"""OUTBOX_RELAY=cdc without Kafka Connect: publish, its guards, the connector's config.

What Debezium does with these rows is tested against the real worker in
test_delivery_modes.py (`make test-cdc`); here is what the project's own code decides.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from events import publish
from events.cdc import database
from events.cdc.connector import connector_config
from events.core.conf import pipeline_settings
from events.core.outbox import OutboxError, cdc_slot_name, record_size, unpark
from events.models import OutboxEvent
from reservations.events import ReservationCreated

pytestmark = pytest.mark.django_db(transaction=True)


def created(n: int = 1, pad: str = "") -> ReservationCreated:
    return ReservationCreated(
        reservation_id=n,
        seat_id=n,
        seat_number=f"{n}{pad}",
        performance_id=1,
        user_id=1,
        price=100,
        status="PENDING",
        hold_expires_at="2030-01-01T00:00:00+00:00",
    )


@pytest.fixture
def cdc(settings: Any) -> None:
    settings.OUTBOX_RELAY = "cdc"


@pytest.fixture
def slot(cdc: None) -> Iterator[str]:
    """This database's slot, as `cdc_connector register` creates it; dropped after."""
    database.ensure_publication()
    database.ensure_slot()
    yield database.slot_name()
    database.drop_slot()


def test_an_unknown_relay_mode_is_refused(settings: Any) -> None:
    settings.OUTBOX_RELAY = "kafka-streams"
    with pytest.raises(ValueError, match="OUTBOX_RELAY='kafka-streams'"):
        pipeline_settings()


def test_relay_outbox_refuses_to_run_in_cdc_mode(cdc: None) -> None:
    with pytest.raises(CommandError, match="OUTBOX_RELAY=cdc"):
        call_command("relay_outbox")


def test_publish_refuses_without_a_slot_so_no_event_is_lost(cdc: None) -> None:
    with (
        pytest.raises(OutboxError, match="cdc_connector register"),
        transaction.atomic(),
    ):
        publish(created())
    assert not OutboxEvent.objects.exists()


def test_publish_deletes_its_row_in_the_same_transaction(slot: str) -> None:
    with transaction.atomic():
        row = publish(created())
        assert not OutboxEvent.objects.filter(pk=row.pk).exists()
    assert not OutboxEvent.objects.exists()


def test_an_event_over_the_limit_stays_parked_with_its_reason(
    slot: str, settings: Any
) -> None:
    settings.OUTBOX_MAX_MESSAGE_BYTES = 4096
    with transaction.atomic():
        big = publish(created(pad=secrets.token_hex(2048)))
        small = publish(created(2))
    kept = OutboxEvent.objects.get()
    assert kept.event_id == big.event_id and kept.parked_at is not None
    assert "OUTBOX_MAX_MESSAGE_BYTES=4096" in kept.last_error
    assert not OutboxEvent.objects.filter(event_id=small.event_id).exists()

    # Re-published from the admin once the limit allows it: inserted anew (Debezium
    # sees inserts only) and deleted again; while still too large, it stays parked.
    assert unpark(OutboxEvent.objects.all()) == 0
    settings.OUTBOX_MAX_MESSAGE_BYTES = 1_048_576
    assert unpark(OutboxEvent.objects.all()) == 1
    assert not OutboxEvent.objects.exists()


def test_record_size_bounds_what_kafka_counts() -> None:
    size = record_size("k", "vv", {"a": "bcd"})
    assert size == 101 + 1 + 2 + 10 + 1 + 3
    assert record_size("é", "", {}) == 101 + 2  # bytes, not characters


def test_slot_names_are_per_database_and_valid() -> None:
    assert cdc_slot_name("test_reservations") == "outbox_test_reservations"
    assert cdc_slot_name("My-DB.x") == "outbox_my_db_x"
    assert len(cdc_slot_name("d" * 100)) == 63


def test_the_connector_maps_the_outbox_columns_as_the_polling_relay_sends_them(
    settings: Any,
) -> None:
    settings.OUTBOX_MAX_MESSAGE_BYTES = 500_000
    config = connector_config(pipeline_settings(), connection.settings_dict)
    name = connection.settings_dict["NAME"]
    assert config["plugin.name"] == "pgoutput"
    assert config["publication.autocreate.mode"] == "disabled"
    assert config["slot.name"] == cdc_slot_name(name)
    assert config["database.dbname"] == name
    assert config["transforms.outbox.route.by.field"] == "topic"
    assert config["transforms.outbox.route.topic.replacement"] == "${routedByValue}"
    assert config["transforms.outbox.table.field.event.key"] == "key"
    assert config["transforms.outbox.table.field.event.payload"] == "payload"
    assert config["transforms.outbox.table.field.event.id"] == "event_id"
    for converter in ("key", "value", "header"):
        assert config[f"{converter}.converter"].endswith("StringConverter")
    assert config["producer.override.max.request.size"] == "500000"
    assert config["transforms"] == "heartbeats,outbox,headers,dropId"


def test_register_says_when_connect_is_unreachable_and_creates_no_slot(
    cdc: None, settings: Any
) -> None:
    settings.CDC_CONNECT_URL = "http://127.0.0.1:1"
    with pytest.raises(CommandError, match="not reachable at http://127.0.0.1:1"):
        call_command("cdc_connector", "register")
    assert database.slot_state() is None


def test_register_refuses_in_polling_mode() -> None:
    with pytest.raises(CommandError, match="OUTBOX_RELAY is 'polling'"):
        call_command("cdc_connector", "register")


def test_republishing_a_parked_row_without_a_slot_is_refused_and_keeps_it(
    cdc: None,
) -> None:
    """Re-publishing deletes the parked row and inserts it anew: without a slot to
    capture the insert, that would lose the event."""
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        event_type="ReservationCreated",
        schema_version=1,
        topic="t",
        key="k",
        payload={"n": 1},
        aggregate_type="reservation",
        aggregate_id="1",
        parked_at=timezone.now(),
        last_error="too large",
    )
    with pytest.raises(OutboxError, match="does not exist"):
        unpark(OutboxEvent.objects.all())
    assert OutboxEvent.objects.get().parked_at is not None


def test_restart_is_an_action_and_says_when_connect_is_unreachable(
    cdc: None, settings: Any
) -> None:
    settings.CDC_CONNECT_URL = "http://127.0.0.1:1"
    with pytest.raises(CommandError, match="not reachable at http://127.0.0.1:1"):
        call_command("cdc_connector", "restart")
