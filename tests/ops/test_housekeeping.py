"""Celery housekeeping against a real Redis broker and a real worker process."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

import events
from config.celery_app import app
from events.maintenance.housekeeping import pipeline_gauges_refresh
from events.models import InboxEntry, OutboxEvent, PublishedEvent
from events.tasks import (
    prune_inbox_entries,
    prune_published_events,
    refresh_pipeline_gauges,
)
from reservations.models import Reservation, ReservationStatus, Seat, SeatStatus
from reservations.services import reservation_create
from reservations.tasks import expire_seat_holds
from tests.celery_worker import running_worker
from tests.effects.event_types import TestPinged
from tests.reservations.factories import make_performance, make_user
from tests.waiting import wait_until


@pytest.fixture
def celery_worker(subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_worker("--pool", "solo") as queue:
        yield queue


def test_the_worker_expires_a_due_hold_and_frees_its_seat_exactly_once(
    celery_worker: str,
) -> None:
    performance = make_performance(seats=2)
    due_seat, kept_seat = performance.seats.order_by("number")
    due = reservation_create(user=make_user(), seat_id=due_seat.pk)
    kept = reservation_create(user=make_user(), seat_id=kept_seat.pk)
    Reservation.objects.filter(pk=due.pk).update(
        hold_expires_at=timezone.now() - timedelta(seconds=1)
    )

    # A sentinel behind them: the solo worker runs one queue in order, so once the
    # old inbox row is pruned, all three expiry runs have finished.
    sentinel = _old_inbox_entry("sentinel")
    for _ in range(3):
        expire_seat_holds.apply_async(queue=celery_worker)
    prune_inbox_entries.apply_async(queue=celery_worker)

    wait_until(
        lambda: not InboxEntry.objects.filter(pk=sentinel.pk).exists(),
        timeout=60,
        what="the worker to run the three expiries and the sentinel",
    )
    assert Reservation.objects.get(pk=due.pk).status == ReservationStatus.EXPIRED
    assert Seat.objects.get(pk=due_seat.pk).status == SeatStatus.AVAILABLE
    assert Reservation.objects.get(pk=kept.pk).status == ReservationStatus.PENDING
    assert Seat.objects.get(pk=kept_seat.pk).status == SeatStatus.HELD
    expirations = [
        row
        for row in OutboxEvent.objects.filter(event_type="SeatHoldExpired")
        if row.payload["data"]["reservation_id"] == due.pk
    ]
    assert len(expirations) == 1


def _old_inbox_entry(handler: str, days: int = 8) -> InboxEntry:
    entry = InboxEntry.objects.create(
        event_id=uuid.uuid4(), handler=handler, topic="t", partition=0, offset=0
    )
    InboxEntry.objects.filter(pk=entry.pk).update(
        processed_at=timezone.now() - timedelta(days=days)
    )
    return entry


def test_the_worker_prunes_only_rows_past_retention(
    celery_worker: str, settings
) -> None:
    now = timezone.now()
    old, recent = now - timedelta(days=8), now - timedelta(days=6)
    for label, sent_at in (("old", old), ("recent", recent)):
        PublishedEvent.objects.create(
            outbox_id=1,
            event_id=uuid.uuid4(),
            event_type="TestPinged",
            topic="t",
            key=label,
            aggregate_type="test",
            aggregate_id=label,
            partition=0,
            offset=0,
            created_at=sent_at,
            sent_at=sent_at,
        )
        _old_inbox_entry(label, days=8 if label == "old" else 6)

    prune_published_events.apply_async(queue=celery_worker)
    prune_inbox_entries.apply_async(queue=celery_worker)

    wait_until(
        lambda: PublishedEvent.objects.count() == 1 and InboxEntry.objects.count() == 1,
        timeout=60,
        what="the worker to prune",
    )
    assert list(PublishedEvent.objects.values_list("key", flat=True)) == ["recent"]
    assert list(InboxEntry.objects.values_list("handler", flat=True)) == ["recent"]


@pytest.mark.django_db
def test_gauge_refresh_reads_backlog_and_oldest_age_from_the_database() -> None:
    with transaction.atomic():
        for n in range(3):
            events.publish(TestPinged(ping_id=f"gauge-{n}"))
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=90))

    dead_letter = apps.get_model("events", "DeadLetter")
    for offset, status in enumerate(["new", "new", "resolved"]):
        dead_letter.objects.create(
            dlq_topic="gauge-dlq",
            dlq_partition=0,
            dlq_offset=offset,
            original_topic="gauge-topic",
            status=status,
        )

    figures = pipeline_gauges_refresh()

    assert figures["backlog"] == 3
    assert REGISTRY.get_sample_value("outbox_backlog_events") == 3
    assert 89 <= REGISTRY.get_sample_value("outbox_oldest_unsent_age_seconds") < 200

    def dead(status: str) -> float | None:
        return REGISTRY.get_sample_value(
            "dead_letters", {"status": status, "topic": "gauge-topic"}
        )

    assert (dead("new"), dead("resolved"), dead("requeued")) == (2, 1, 0)


def test_beat_schedules_every_housekeeping_task() -> None:
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {
        "reservations.tasks.expire_seat_holds",
        "events.tasks.prune_published_events",
        "events.tasks.prune_inbox_entries",
        "events.tasks.refresh_pipeline_gauges",
    }
    assert scheduled <= set(app.tasks)


def test_a_prefork_worker_serves_the_gauges_its_pool_processes_set(
    subprocess_env: dict[str, str], tmp_path
) -> None:
    with transaction.atomic():
        for n in range(4):
            events.publish(TestPinged(ping_id=f"worker-gauge-{n}"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_worker(
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        CELERY_METRICS_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    ) as queue:
        refresh_pipeline_gauges.apply_async(queue=queue)

        def backlog_line() -> str | None:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = response.read().decode()
            except OSError:
                return None
            lines = [x for x in body.splitlines() if x.startswith("outbox_backlog")]
            return lines[0] if lines and lines[0].endswith(" 4.0") else None

        assert wait_until(backlog_line, timeout=60, what="the worker's backlog gauge")
