"""The Debezium connector's configuration, built from the Django settings.

Debezium's PostgreSQL connector reads the outbox table's inserts through the
project's publication and slot (`events.cdc.database`); the Outbox Event Router turns
each into the record the polling relay would send:

- topic: the row's `topic` column (`route.by.field`, `${routedByValue}`);
- key and value: the `key` and `payload` columns as text, through StringConverter, so
  the bytes are exactly the polling relay's (`key.encode()`, `payload.encode()`);
  keyed records land on the same partition as well (the Java producer's default
  partitioner and librdkafka's `murmur2_random` both take murmur2 of the key bytes);
- headers: the `headers` column (a JSON object) is placed in one carrier header, which
  the project's ExplodeJsonHeader transformation (infra/connect/headers-smt) spreads
  into one header per entry; the router's own `id` header is dropped (DropHeaders),
  so the headers are the polling relay's too.

The router applies only to the outbox table's change events (a TopicNameMatches
predicate), not to Debezium's heartbeats; the two after it run on every record (a
predicate would see the routed topic), and leave a heartbeat as it is. The heartbeat
query's logical decoding messages are dropped before all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from events.cdc.database import OUTBOX_TABLE, PUBLICATION
from events.core.conf import PipelineSettings
from events.core.outbox import cdc_slot_name

# The header the router puts the `headers` column in, for ExplodeJsonHeader to spread.
CARRIER_HEADER = "__outbox_headers"
# How often Debezium confirms progress while the outbox is idle (with lsn.flush.mode
# below), so the slot does not retain the WAL that others write meanwhile.
HEARTBEAT_INTERVAL_MS = 10_000
# The prefix of the logical decoding message each heartbeat writes (see below).
HEARTBEAT_MESSAGE = "outbox-heartbeat"


def connector_name(database: str) -> str:
    return f"outbox-{database}"


def topic_prefix(database: str) -> str:
    """Debezium's logical name for this database; its table topic is never written."""
    return "cdc." + re.sub(r"[^A-Za-z0-9_-]", "_", database)


def heartbeat_topic(database: str) -> str:
    return f"__debezium-heartbeat.{topic_prefix(database)}"


@dataclass(frozen=True)
class StoredOffset:
    """Where Connect's stored offset puts the connector in the WAL (LSNs as integers).

    `resume_lsn` (Debezium's `lsn_commit`, else `lsn`) is the last commit it passed
    and stored, where its task resumes and what it checks against the slot;
    `sent_lsn` (`lsn_proc`, else `lsn`) is the last change it sent, acknowledged by
    Kafka before Connect committed the offset, in transaction `tx_id` (`txId`, kept
    only for an offset stored at an insert, `messageType` INSERT).
    """

    resume_lsn: int
    sent_lsn: int
    tx_id: int | None = None


def stored_offset(offsets: dict[str, Any], database: str) -> StoredOffset | None:
    """Read this database's position from GET /connectors/NAME/offsets (KIP-875).

    None when Connect holds no offset for it (a new connector, or offsets reset).
    """
    for entry in offsets.get("offsets", []):
        if entry.get("partition", {}).get("server") != topic_prefix(database):
            continue
        offset = entry.get("offset") or {}
        lsn = offset.get("lsn")
        resume = offset.get("lsn_commit", lsn)
        sent = offset.get("lsn_proc", lsn)
        if resume is None or sent is None:
            return None
        # txId names the transaction of lsn_proc only when the offset was stored at
        # one of its changes: at a BEGIN Debezium sets txId to the new transaction
        # but lsn_proc still holds the last commit, so the pair would pass that
        # transaction's first inserts off as sent. Without it the count errs high.
        tx = offset.get("txId") if offset.get("messageType") == "INSERT" else None
        return StoredOffset(
            resume_lsn=int(resume),
            sent_lsn=int(sent),
            tx_id=None if tx is None else int(tx),
        )
    return None


def connector_config(
    conf: PipelineSettings, database: dict[str, Any]
) -> dict[str, str]:
    """Return the connector's configuration for Django's `database` settings dict."""
    name = database["NAME"]
    prefix = topic_prefix(name)
    table_topic = f"{prefix}.public.{OUTBOX_TABLE}"
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        # One task: the WAL is one ordered stream (per-key order needs one reader).
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": conf.cdc_database_host or database["HOST"] or "127.0.0.1",
        "database.port": str(database["PORT"] or 5432),
        "database.user": database["USER"],
        "database.password": database["PASSWORD"],
        "database.dbname": name,
        "topic.prefix": prefix,
        "table.include.list": f"public.{OUTBOX_TABLE}",
        # xid8 (the polling relay's read position) is a type Debezium does not map.
        "column.exclude.list": f"public.{OUTBOX_TABLE}.xact_id",
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "slot.name": cdc_slot_name(name),
        # The slot exists before the connector (register creates it); stream from it,
        # never snapshot the table (its rows are parked ones, or a polling backlog).
        "snapshot.mode": "no_data",
        "tombstones.on.delete": "false",
        # Debezium hands the WAL's changes to Connect in batches, waiting up to
        # poll.interval.ms for one to fill: its default 500 ms made commit -> handler
        # take 0.7 s at 100 events/s (bench/HISTORY.md). A batch as large as the
        # polling relay's, and room for a few of them in its queue.
        "poll.interval.ms": "10",
        "max.batch.size": "2048",
        "max.queue.size": "16384",
        # No __debezium.context.* headers: the consumers get the polling relay's headers.
        "extended.headers.enabled": "false",
        # The WAL is the cluster's: while this database's outbox is idle, others' writes
        # would pile up behind the slot (hundreds of MB in minutes beside the test
        # suite). Each heartbeat writes a logical decoding message into this database's
        # stream; its record (dropped by the first transformation) carries the offset
        # forward, and Debezium confirms that position to the slot. (The driver's own
        # keepalive flush, lsn.flush.mode=connector_and_driver, moved the slot but not
        # Connect's offsets: a restarted task then found its offset gone and failed.)
        "heartbeat.interval.ms": str(HEARTBEAT_INTERVAL_MS),
        "heartbeat.action.query": (
            f"SELECT pg_logical_emit_message(false, '{HEARTBEAT_MESSAGE}', '')"
        ),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "header.converter": "org.apache.kafka.connect.storage.StringConverter",
        # publish() parks what would exceed this; a record Kafka refuses fails the task.
        "producer.override.max.request.size": str(conf.max_message_bytes),
        "errors.tolerance": "none",
        # A lost database connection (PostgreSQL restarting) is retriable: Debezium
        # restarts its task after this wait, without limit. Its default, 10 s, was most
        # of the 17 s the CDC relay took to catch up after a restart (make chaos-cdc).
        "retriable.restart.connector.wait.ms": "1000",
        **transforms(table_topic, f"{prefix}.message"),
    }


def transforms(table_topic: str, message_topic: str) -> dict[str, str]:
    """Drop the heartbeat messages, route the outbox rows, spread and drop headers."""
    return {
        "transforms": "heartbeats,outbox,headers,dropId",
        "transforms.heartbeats.type": "org.apache.kafka.connect.transforms.Filter",
        "transforms.heartbeats.predicate": "heartbeatMessage",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.predicate": "outboxTable",
        "transforms.outbox.table.field.event.id": "event_id",
        "transforms.outbox.table.field.event.key": "key",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": "${routedByValue}",
        "transforms.outbox.route.tombstone.on.empty.payload": "false",
        "transforms.outbox.table.fields.additional.placement": (
            f"headers:header:{CARRIER_HEADER}"
        ),
        "transforms.headers.type": "local.outbox.connect.ExplodeJsonHeader",
        "transforms.headers.header": CARRIER_HEADER,
        "transforms.dropId.type": "org.apache.kafka.connect.transforms.DropHeaders",
        "transforms.dropId.headers": "id",
        "predicates": "outboxTable,heartbeatMessage",
        "predicates.heartbeatMessage.type": (
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
        ),
        "predicates.heartbeatMessage.pattern": re.escape(message_topic),
        "predicates.outboxTable.type": (
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
        ),
        "predicates.outboxTable.pattern": re.escape(table_topic),
    }
