"""`manage.py requeue_dead_letters`: send stored dead letters back to their topics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone

from events.core.conf import pipeline_settings
from events.dead_letters.requeue import MAX_REPLAYS, REQUEUEABLE, dead_letter_requeue
from events.models import DeadLetter


class Command(BaseCommand):
    help = (
        "Requeue stored dead letters (status new or requeued) to their original "
        "topics; the actor recorded is 'cli'. --dry-run prints what would be sent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--topic",
            action="append",
            help="Original topic or stream name (repeatable).",
        )
        parser.add_argument(
            "--error-class",
            help="Exception class: fully qualified, or the bare class name.",
        )
        parser.add_argument(
            "--since", help="Only dead letters that failed at or after (ISO 8601)."
        )
        parser.add_argument("--ids", nargs="+", type=int, help="Dead letter ids.")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--max-replays", type=int, default=MAX_REPLAYS)

    def handle(self, *args: Any, **options: Any) -> None:
        queryset = DeadLetter.objects.filter(status__in=REQUEUEABLE).order_by("pk")
        if options["topic"]:
            conf = pipeline_settings()
            topics = [
                conf.topic(t) if t in conf.streams else t for t in options["topic"]
            ]
            queryset = queryset.filter(original_topic__in=topics)
        if options["error_class"]:
            name = options["error_class"]
            queryset = queryset.filter(
                Q(error_class=name) | Q(error_class__endswith=f".{name}")
            )
        if options["since"]:
            try:
                since = datetime.fromisoformat(options["since"])
            except ValueError as exc:
                raise CommandError(f"--since is not ISO 8601: {exc}") from exc
            if timezone.is_naive(since):
                since = timezone.make_aware(since, UTC)
            queryset = queryset.filter(last_failed_at__gte=since)
        if options["ids"]:
            queryset = queryset.filter(pk__in=options["ids"])
        letters = list(queryset)
        if not letters:
            self.stdout.write("no dead letter matches")
            return
        results = dead_letter_requeue(
            dead_letters=letters,
            user=None,
            dry_run=options["dry_run"],
            max_replays=options["max_replays"],
        )
        for result in results:
            self.stdout.write(result.describe())
        sent = sum(r.outcome == "sent" for r in results)
        failed = sum(r.outcome == "failed" for r in results)
        prefix = "dry run: " if options["dry_run"] else ""
        self.stdout.write(
            f"{prefix}{len(results)} matched, {sent} sent, {failed} failed, "
            f"{sum(r.outcome == 'would_send' for r in results)} would be sent, "
            f"{sum(r.outcome == 'refused' for r in results)} refused (replay cap)"
        )
        if failed:
            raise CommandError(f"{failed} dead letter(s) could not be requeued")
