"""`manage.py cdc_connector register|watch|status|restart|delete`: the CDC connector.

`register` creates the outbox publication (or repairs one that differs) and this
database's replication slot if missing, Debezium's heartbeat topic, and creates or
updates the connector (built from the settings, events.cdc.connector) in Kafka
Connect, resetting its stored offsets when they do not fit the slot
(events.cdc.lifecycle): idempotent, so `make run RELAY=cdc` runs it on every start.
`status` prints the connector's and the slot's state (exit 1 unless the connector and
its task run). `delete` removes the connector and returns once its task let go of the
slot; with `--drop-slot` also the slot, which otherwise keeps retaining WAL, but not
while it holds outbox events Debezium has not sent (unless `--discard-unread`).
`restart` restarts failed tasks (after fixing what failed them; they resume from the
last committed offset, so nothing is lost). `watch` (the `make run RELAY=cdc`
process) waits for Connect, registers, then logs every change of the connector's
state until SIGTERM.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from events.cdc import database, lifecycle
from events.cdc.connector import connector_config, connector_name, heartbeat_topic
from events.cdc.rest import ConnectClient, ConnectError
from events.core.conf import pipeline_settings
from events.core.kafka import KafkaException
from events.core.topics import create_topics
from events.management.process import stop_on_signals
from events.models import OutboxEvent

logger = logging.getLogger("events.cdc")


def is_running(status: dict[str, Any] | None) -> bool:
    """Whether the connector and every task of it are RUNNING (and it has a task)."""
    if not status or status["connector"]["state"] != "RUNNING":
        return False
    tasks = status.get("tasks", [])
    return bool(tasks) and all(task["state"] == "RUNNING" for task in tasks)


def summary(status: dict[str, Any] | None) -> dict[str, Any]:
    """The connector's and its tasks' states, with a failed task's first trace line."""
    if status is None:
        return {"connector": "MISSING"}
    tasks = [
        {
            "state": t["state"],
            **({"error": t["trace"].splitlines()[0]} if t.get("trace") else {}),
        }
        for t in status.get("tasks", [])
    ]
    return {"connector": status["connector"]["state"], "tasks": tasks}


def restore_state(client: ConnectClient, name: str, state: str | None) -> None:
    """Put a connector stopped for a count back as it was: PAUSED, or running (also
    one that was UNASSIGNED, RESTARTING or FAILED: resumed, Connect retries it)."""
    if state == "PAUSED":
        client.pause(name)
    elif state not in (None, "STOPPED"):
        client.resume(name)


class Command(BaseCommand):
    help = "Register, inspect or delete the Debezium connector of the CDC relay."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "action", choices=["register", "watch", "status", "restart", "delete"]
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            help="register, watch: wait up to this many seconds for the task to run.",
        )
        parser.add_argument(
            "--drop-slot",
            action="store_true",
            help="delete: also drop the replication slot (else it retains WAL).",
        )
        parser.add_argument(
            "--discard-unread",
            action="store_true",
            help="delete --drop-slot: drop it even with events Debezium has not sent.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        conf = pipeline_settings()
        client = ConnectClient(conf.cdc_connect_url)
        name = connector_name(connection.settings_dict["NAME"])
        try:
            if options["action"] == "register":
                self.register(client, name, wait=options["wait"])
            elif options["action"] == "watch":
                self.watch(client, name, wait=options["wait"] or 180.0)
            elif options["action"] == "status":
                self.status(client, name)
            elif options["action"] == "restart":
                client.restart(name)
                self.stdout.write(f"restarted the failed tasks of {name}")
            else:
                self.delete(
                    client,
                    name,
                    drop_slot=options["drop_slot"],
                    discard_unread=options["discard_unread"],
                )
        except ConnectError as error:
            raise CommandError(str(error)) from None

    def register(self, client: ConnectClient, name: str, *, wait: float) -> None:
        conf = pipeline_settings()
        if not conf.cdc:
            raise CommandError(
                "OUTBOX_RELAY is 'polling': relay_outbox sends the outbox. Set "
                "OUTBOX_RELAY=cdc (and stop relay_outbox) before registering Debezium, "
                "or every event would be sent twice"
            )
        # Before creating the slot: a slot that no connector will read retains WAL.
        client.version()
        pending = OutboxEvent.objects.filter(parked_at__isnull=True).count()
        if pending:
            raise CommandError(
                f"the outbox holds {pending} unsent rows, which Debezium would never "
                "see (it captures new inserts only): drain them with relay_outbox "
                "(OUTBOX_RELAY=polling) first"
            )
        try:
            for change in database.ensure_publication():
                self.stdout.write(change)
        except database.CdcDatabaseError as error:
            raise CommandError(str(error)) from None
        if database.ensure_slot():
            self.stdout.write(f"created replication slot {database.slot_name()}")
        try:
            create_topics([heartbeat_topic(connection.settings_dict["NAME"])])
        except KafkaException as error:
            raise CommandError(
                f"cannot create the heartbeat topic on {conf.bootstrap_servers}: {error}"
            ) from error
        config = connector_config(conf, connection.settings_dict)
        reset = lifecycle.configure(client, name, config)
        if reset:
            self.stdout.write(f"reset the stored offsets of {name}: {reset}")
        self.stdout.write(f"registered connector {name} at {client.url}")
        if wait <= 0:
            return
        deadline = time.monotonic() + wait
        while not is_running(status := client.status(name)):
            if status and any(t["state"] == "FAILED" for t in status.get("tasks", [])):
                raise CommandError(f"connector {name} failed: {json.dumps(status)}")
            if time.monotonic() > deadline:
                raise CommandError(
                    f"connector {name} not running after {wait:.0f} s: "
                    f"{json.dumps(status)}"
                )
            time.sleep(0.2)
        self.stdout.write(self.style.SUCCESS(f"connector {name} is running"))

    def watch(self, client: ConnectClient, name: str, *, wait: float) -> None:
        """Register once Connect answers, then log the connector's state changes."""
        stopping = threading.Event()
        stop_on_signals(stopping.set, log=logger, doing="stopping the watch")
        deadline = time.monotonic() + wait
        while not stopping.is_set():
            try:
                client.version()
                break
            except ConnectError as error:
                if time.monotonic() > deadline:
                    raise
                logger.info("waiting for Kafka Connect: %s", error)
                stopping.wait(2.0)
        if stopping.is_set():
            return
        self.register(client, name, wait=wait)
        last = ""
        while not stopping.wait(5.0):
            try:
                state = json.dumps(summary(client.status(name)))
            except ConnectError as error:
                state = str(error)
            if state != last:
                level = logging.INFO if '"RUNNING"' in state else logging.WARNING
                logger.log(level, "connector %s: %s", name, state)
                last = state

    def status(self, client: ConnectClient, name: str) -> None:
        status = client.status(name)
        slot = database.slot_state()
        self.stdout.write(
            json.dumps(
                {
                    "connector": status,
                    "slot": {"name": database.slot_name(), **(slot or {})},
                },
                indent=2,
            )
        )
        if not is_running(status):
            raise CommandError(f"connector {name} is not running")

    def delete(
        self,
        client: ConnectClient,
        name: str,
        *,
        drop_slot: bool,
        discard_unread: bool,
    ) -> None:
        """Delete the connector (and the slot); return once its task let go of the slot.

        Connect deletes asynchronously: DELETE answers before the worker has stopped
        the task, which still streams from the slot for a moment. Waiting for that
        here means a `register` right after (or a slot drop) does not meet it.
        """
        status = client.status(name)
        if drop_slot:
            self.drop_slot(client, name, status, discard_unread=discard_unread)
            if status is not None:
                # Its offsets name the dropped slot's WAL: they mean nothing now.
                client.reset_offsets(name)
        if client.delete(name):
            client.wait_deleted(name)
            self.stdout.write(f"deleted connector {name}")
        else:
            self.stdout.write(f"no connector {name}")
        try:
            database.wait_slot_inactive()
        except database.CdcDatabaseError as error:
            raise CommandError(str(error)) from None

    def drop_slot(
        self,
        client: ConnectClient,
        name: str,
        status: dict[str, Any] | None,
        *,
        discard_unread: bool,
    ) -> None:
        """Stop the connector, count what the slot holds unsent, drop it if nothing.

        Their rows are gone (publish deletes them at once): the slot's WAL is the only
        copy, and dropping it loses them without a trace. Publishers wait from the
        count to the drop (`publishing_paused`), so none commits in between. On a
        refusal or a failure a connector that ran (stopped to count) is resumed, so
        nothing has changed.
        """
        was = status["connector"]["state"] if status is not None else None
        try:
            if not lifecycle.stop_for_drop(client, name, status):
                self.stdout.write(f"no replication slot {database.slot_name()}")
                return
            stored = lifecycle.stored_for_count(client, name, status)
            # A refusal blocks no publisher: counted first without the lock, then
            # again under it (what committed meanwhile), and dropped.
            unread = lifecycle.count_unread(stored)
            if unread.count:
                self.refuse_unless_discarding(unread, status, discard_unread)
            with database.publishing_paused():
                again = lifecycle.count_unread(stored)
                if again.count > unread.count:
                    self.refuse_unless_discarding(again, status, discard_unread)
                database.drop_slot()
        except (ConnectError, DatabaseError, database.CdcDatabaseError) as error:
            restore_state(client, name, was)
            raise CommandError(f"the slot was not dropped: {error}") from None
        except CommandError:
            restore_state(client, name, was)
            raise
        self.stdout.write(f"dropped replication slot {database.slot_name()}")

    def refuse_unless_discarding(
        self, unread: lifecycle.Unread, status: dict[str, Any] | None, discard: bool
    ) -> None:
        slot = database.slot_name()
        if discard:
            self.stdout.write(
                self.style.WARNING(
                    f"discarding {unread.count} outbox events in {slot} that Debezium "
                    "has not sent (--discard-unread)"
                )
            )
            return
        send = (
            "Let the connector send them (`cdc_connector status`; `cdc_connector "
            "restart` once what failed its task is fixed)"
            if status is not None
            else "No connector reads it: `cdc_connector register` one to send them"
        )
        raise CommandError(
            f"replication slot {slot} holds {'' if unread.exact else 'up to '}"
            f"{unread.count} outbox events that Debezium has not sent, and nothing "
            f"else has them: dropping it would lose them. {send} and delete again, "
            "or add --discard-unread to drop them anyway"
        )
