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
from events.cdc.connector import (
    StoredOffset,
    connector_config,
    stored_offset,
    topic_prefix,
)
from events.core.conf import pipeline_settings
from events.core.outbox import OutboxError, cdc_slot_name, record_size, unpark
from events.models import OutboxEvent
from reservations.events import ReservationCreated
from tests.events.pipeline import process_log
from tests.events.relay_process import start_relay_process
from tests.waiting import wait_until

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


def change_types() -> list[str]:
    """The message types pgoutput would stream from this database's slot now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT chr(get_byte(data, 0)) FROM pg_logical_slot_peek_binary_changes("
            "%s, NULL, NULL, 'proto_version', '1', 'publication_names', %s)",
            [database.slot_name(), database.PUBLICATION],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def publication() -> Iterator[None]:
    """The project's publication again after the test, whatever the test did to it."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP PUBLICATION IF EXISTS {database.PUBLICATION}")
    database.ensure_publication()


def test_a_publication_that_streams_parked_rows_and_deletes_is_repaired(
    cdc: None, publication: None, settings: Any
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP PUBLICATION IF EXISTS {database.PUBLICATION}")
        # As an older version or a hand might have left it: no row filter, and
        # publish's default (insert, update, delete, truncate).
        cursor.execute(
            f"CREATE PUBLICATION {database.PUBLICATION} FOR TABLE {database.OUTBOX_TABLE}"
        )

    changes = database.ensure_publication()

    assert changes == [
        "repaired publication outbox_events: publish: insert, update, delete, "
        "truncate -> insert",
        "repaired publication outbox_events: tables: public.events_outboxevent -> "
        "public.events_outboxevent WHERE (parked_at IS NULL)",
    ]
    assert database.ensure_publication() == []  # as it should be now: left alone
    # What that means in the stream: a published event's insert, and nothing of its
    # delete (publish's own) nor of a parked row.
    database.ensure_slot()
    try:
        with transaction.atomic():
            publish(created(1))
        settings.OUTBOX_MAX_MESSAGE_BYTES = 4096
        with transaction.atomic():
            publish(created(2, pad=secrets.token_hex(4096)))
        assert OutboxEvent.objects.filter(parked_at__isnull=False).count() == 1
        assert [t for t in change_types() if t not in "BCR"] == ["I"]
    finally:
        database.drop_slot()


def test_a_publication_with_another_table_or_a_column_list_is_repaired(
    cdc: None, publication: None
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP PUBLICATION IF EXISTS {database.PUBLICATION}")
        cursor.execute(
            f"CREATE PUBLICATION {database.PUBLICATION} FOR TABLE"
            f" {database.OUTBOX_TABLE} (id, payload) WHERE (parked_at IS NULL),"
            " events_inboxentry WITH (publish = 'insert')"
        )

    [change] = database.ensure_publication()

    assert change == (
        "repaired publication outbox_events: tables: public.events_inboxentry; "
        "public.events_outboxevent WHERE (parked_at IS NULL) (a column list) -> "
        "public.events_outboxevent WHERE (parked_at IS NULL)"
    )
    assert database.ensure_publication() == []


def test_unread_events_counts_the_committed_outbox_inserts_the_slot_holds(
    slot: str, settings: Any
) -> None:
    """What `cdc_connector delete --drop-slot` would lose: committed, unparked
    inserts; not a rolled-back one, a parked one or a heartbeat message."""
    settings.OUTBOX_MAX_MESSAGE_BYTES = 4096
    assert database.unread_events() == 0
    with transaction.atomic():
        publish(created(1))
        publish(created(2))
    with transaction.atomic():
        publish(created(3))
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(created(4))
        raise RuntimeError("roll back")
    with transaction.atomic():
        publish(created(5, pad=secrets.token_hex(4096)))  # parked
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_logical_emit_message(false, 'outbox-heartbeat', '')")
    assert database.unread_events() == 3
    # What Debezium sent (its stored offset) is not unread: the transactions committed
    # up to lsn_commit, and in transaction txId the inserts up to lsn_proc.
    changes = peek(slot)
    first_commit = next(lsn for lsn, _, kind in changes if kind == "C")
    assert database.unread_events(committed_up_to=first_commit) == 1
    last_insert, last_tx = [(lsn, xid) for lsn, xid, kind in changes if kind == "I"][-1]
    sent = {"committed_up_to": first_commit, "tx_id": last_tx}
    assert database.unread_events(**sent, sent_up_to=last_insert) == 0
    assert database.unread_events(**sent, sent_up_to=last_insert - 1) == 1


def test_an_insert_before_the_last_sent_one_in_a_later_commit_is_unread(
    slot: str, django_db_blocker: Any
) -> None:
    """Transactions reach Debezium in commit order, their inserts' positions do not:
    A inserts first, B inserts after it and commits first. With B sent (the stored
    offset in B, past its insert), A's insert is unread though its position is
    below B's."""
    import psycopg

    url = own_connection_url()
    with psycopg.connect(url) as a, psycopg.connect(url) as b:
        for conn, n in ((a, 1), (b, 2)):
            conn.execute(
                "INSERT INTO events_outboxevent (event_id, event_type, schema_version,"
                " topic, key, payload, headers, aggregate_type, aggregate_id, last_error,"
                " created_at) VALUES (%s, 'T', 1, 't', %s, '{}', '{}', 'a', 'a', '',"
                " now())",
                [uuid.uuid4(), f"k{n}"],
            )
        b.commit()
        a.commit()
    changes = peek(slot)
    inserts = [(lsn, xid) for lsn, xid, kind in changes if kind == "I"]
    (a_lsn, a_tx), (b_lsn, b_tx) = inserts[1], inserts[0]  # in commit order: B, A
    assert a_lsn < b_lsn and a_tx != b_tx
    before_b = min(lsn for lsn, xid, kind in changes if kind == "B" and xid == b_tx)
    assert (
        database.unread_events(
            committed_up_to=before_b - 1, tx_id=b_tx, sent_up_to=b_lsn
        )
        == 1
    )
    b_commit = next(lsn for lsn, xid, kind in changes if kind == "C" and xid == b_tx)
    assert database.unread_events(committed_up_to=b_commit) == 1
    assert database.unread_events() == 2


def test_publishers_wait_while_a_slot_drop_counts_and_drops(slot: str) -> None:
    """`cdc_connector delete --drop-slot` holds SLOT_DROP_LOCK from its count of the
    slot's unsent events to the drop; a publish in between would be lost uncounted."""
    import psycopg
    from django.db import OperationalError

    from events.core.outbox import SLOT_DROP_LOCK

    url = own_connection_url()
    with psycopg.connect(url, autocommit=True) as dropper:
        dropper.execute("SELECT pg_advisory_lock(%s, %s)", list(SLOT_DROP_LOCK))
        with (
            pytest.raises(OperationalError, match="lock timeout"),
            transaction.atomic(),
        ):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            publish(created(1))
        dropper.execute("SELECT pg_advisory_unlock(%s, %s)", list(SLOT_DROP_LOCK))
    with transaction.atomic():
        publish(created(2))
    assert database.unread_events() == 1


def own_connection_url() -> str:
    """The test database, for connections of a test's own beside Django's."""
    return "postgresql://{USER}:{PASSWORD}@{HOST}:{PORT}/{NAME}".format(
        **{k: connection.settings_dict[k] or "" for k in
           ("USER", "PASSWORD", "HOST", "PORT", "NAME")}
    )  # fmt: skip


def peek(slot: str) -> list[tuple[int, int, str]]:
    """(position, transaction, message type) of what the slot would stream."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (lsn - '0/0')::bigint, xid::text::bigint, chr(get_byte(data, 0))"
            " FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version',"
            " '1', 'publication_names', %s)",
            [slot, database.PUBLICATION],
        )
        return [(int(lsn), int(xid), kind) for lsn, xid, kind in cursor.fetchall()]


def test_stored_offsets_sent_before_the_slot_start_are_an_older_slots(
    slot: str,
) -> None:
    position = database.slot_position()
    assert position is not None

    def at(sent: int, resume: int | None = None) -> str | None:
        stored = StoredOffset(
            resume_lsn=sent if resume is None else resume, sent_lsn=sent
        )
        return database.offsets_mismatch(stored, position)

    older = at(position.restart_lsn - 1)
    assert older and older.endswith("an older slot's")
    assert at(position.restart_lsn) is None  # Debezium resumes there
    other = at(position.current_wal_lsn, resume=position.current_wal_lsn + 2**32)
    assert other and other.endswith("another server's")


def test_stored_offset_reads_this_databases_lsns_from_connects_answer() -> None:
    name = connection.settings_dict["NAME"]
    answer = {
        "offsets": [
            {"partition": {"server": "cdc.other"}, "offset": {"lsn": 1}},
            {
                "partition": {"server": topic_prefix(name)},
                "offset": {
                    "lsn_proc": 30,
                    "lsn_commit": 20,
                    "lsn": 30,
                    "txId": 7,
                    "messageType": "INSERT",
                },
            },
        ]
    }
    assert stored_offset(answer, name) == StoredOffset(
        resume_lsn=20, sent_lsn=30, tx_id=7
    )
    # Stored at a BEGIN: txId is the new transaction, lsn_proc still the last commit;
    # taken together they would pass that transaction's first inserts off as sent.
    at_begin = {"offsets": [{"partition": {"server": topic_prefix(name)},
                             "offset": {"lsn_proc": 20, "lsn_commit": 20, "lsn": 25,
                                        "txId": 8, "messageType": "BEGIN"}}]}  # fmt: skip
    assert stored_offset(at_begin, name) == StoredOffset(resume_lsn=20, sent_lsn=20)
    assert stored_offset({"offsets": []}, name) is None
    lsn_only = {"offsets": [{"partition": {"server": topic_prefix(name)},
                             "offset": {"lsn": 5}}]}  # fmt: skip
    assert stored_offset(lsn_only, name) == StoredOffset(resume_lsn=5, sent_lsn=5)


def relay_log_at_start(env: dict[str, str]) -> str:
    """Start a real relay_outbox (polling), wait until it runs; return its log."""
    process = start_relay_process(env, "--poll-interval", "0.2")
    try:
        wait_until(
            lambda: "relay_outbox starting" in process_log(process),
            timeout=60,
            what="the relay to start",
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
    return process_log(process)


def test_relay_outbox_warns_of_a_slot_left_by_the_cdc_relay(
    subprocess_env: dict[str, str],
) -> None:
    """`make run RELAY=cdc` stopped with Ctrl-C leaves the slot (by design); a polling
    relay started afterwards must say that it keeps the WAL, and how to drop it."""
    database.ensure_publication()
    database.ensure_slot()
    try:
        log = relay_log_at_start(subprocess_env)
    finally:
        database.drop_slot()
    [warning] = [line for line in log.splitlines() if "WARNING" in line]
    assert f"replication slot {database.slot_name()} of the CDC relay" in warning
    assert "manage.py cdc_connector delete --drop-slot" in warning


def test_relay_outbox_does_not_warn_without_a_slot(
    subprocess_env: dict[str, str],
) -> None:
    assert "replication slot" not in relay_log_at_start(subprocess_env)
