"""`manage.py relay_outbox`: run the outbox relay until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from events.cdc import database
from events.core.conf import pipeline_settings
from events.management.process import require_topics, serve_metrics, stop_on_signals
from events.relay.outbox_relay import OutboxRelay
from events.relay.shard_count import ShardCountChanged

logger = logging.getLogger("events.relay")


def warn_of_a_cdc_slot() -> None:
    """Warn when the CDC relay's replication slot of this database is still there.

    Left on purpose by a stopped `make run RELAY=cdc` (a restart in cdc mode resumes
    from it) or by a connector deleted without --drop-slot. In polling mode nothing
    reads it, and it keeps the whole cluster's WAL from being recycled, forever.
    """
    try:
        state = database.slot_state()
    except DatabaseError as error:
        # Only advice: a database still coming up must not stop the relay's start,
        # which waits for it anyway.
        logger.info("could not look for a CDC replication slot: %s", error)
        return
    if state is None:
        return
    logger.warning(
        "replication slot %s of the CDC relay exists (%s, retaining %s bytes of WAL):"
        " nothing reads it in polling mode and it keeps the cluster's WAL. Unless you"
        " go back to OUTBOX_RELAY=cdc, drop it with `manage.py cdc_connector delete"
        " --drop-slot` (it refuses while Debezium has events left to send)",
        database.slot_name(),
        "in use" if state["active"] else "inactive",
        state["retained_wal_bytes"],
    )


class Command(BaseCommand):
    help = (
        "Send committed outbox events to Kafka (one leader per shard; extra relays "
        "share the shards or stand by)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="Seconds between polls when no NOTIFY arrives.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="Serve Prometheus metrics here.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        conf = pipeline_settings()
        if conf.cdc:
            # Two relays would send every event twice (and publish deletes the rows).
            raise CommandError(
                "OUTBOX_RELAY=cdc: Debezium (Kafka Connect) sends the outbox, so "
                "relay_outbox does not run; set OUTBOX_RELAY=polling to use it"
            )
        for name in ("batch_size", "poll_interval"):
            if options[name] is not None and options[name] <= 0:
                raise CommandError(f"--{name.replace('_', '-')} must be positive")
        warn_of_a_cdc_slot()
        require_topics(conf, [conf.topic(stream) for stream in conf.streams])
        serve_metrics(options["metrics_port"])
        relay = OutboxRelay(
            batch_size=options["batch_size"], poll_interval=options["poll_interval"]
        )

        stop_on_signals(
            relay.stop, log=logger, doing="finishing the batch in flight, then stopping"
        )
        logger.info(
            "relay_outbox starting (bootstrap %s, batch %d, poll %.1f s, %d shard%s)",
            conf.bootstrap_servers,
            relay.batch_size,
            relay.poll_interval,
            relay.shard_count,
            "" if relay.shard_count == 1 else "s",
        )
        try:
            relay.run()
        except ShardCountChanged as exc:
            raise CommandError(str(exc)) from exc
        logger.info("relay_outbox stopped")
