"""`manage.py create_topics`: create the event, retry and DLQ topics; idempotent."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from events.core.conf import pipeline_settings
from events.core.kafka import KafkaException
from events.core.topics import create_topics


class Command(BaseCommand):
    help = "Create every topic the pipeline needs; existing topics are left unchanged."

    def handle(self, *args: Any, **options: Any) -> None:
        conf = pipeline_settings()
        try:
            results = create_topics()
        except KafkaException as exc:
            raise CommandError(
                f"cannot create topics on {conf.bootstrap_servers}: {exc}"
            ) from exc
        for result in results:
            state = "created" if result.created else "exists"
            self.stdout.write(f"{state:8} {result.name}")
        created = sum(r.created for r in results)
        self.stdout.write(
            self.style.SUCCESS(
                f"{created} created, {len(results) - created} already there "
                f"({conf.partitions} partitions, replication {conf.replication_factor})"
            )
        )
