"""Celery tasks of the events app: retention of the pipeline tables and the gauges
that describe them. Thin wrappers; beat runs them (settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from events.maintenance.housekeeping import (
    inbox_entries_prune,
    pipeline_gauges_refresh,
    published_events_prune,
)


@shared_task
def prune_published_events() -> int:
    """Delete delivery-log rows older than EVENTS_PUBLISHED_RETENTION_DAYS."""
    return published_events_prune()


@shared_task
def prune_inbox_entries() -> int:
    """Delete inbox rows older than EVENTS_INBOX_RETENTION_DAYS."""
    return inbox_entries_prune()


@shared_task
def refresh_pipeline_gauges() -> dict[str, float]:
    """Set the outbox backlog, oldest unsent age and dead-letter gauges."""
    return pipeline_gauges_refresh()
