"""The admin index shows the pipeline at a glance: backlog, oldest age, lag, dead letters."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

import events
from events.models import OutboxEvent
from tests.effects.event_types import TestPinged
from tests.events.pipeline import send_events

pytestmark = pytest.mark.django_db


def cell(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">(.*?)</td>', html, re.S)
    assert match, f"no #{element_id} on the admin index"
    return match.group(1).strip()


def test_admin_index_shows_backlog_oldest_age_lag_and_dead_letters(
    client, fresh_topics
) -> None:
    with transaction.atomic():
        events.publish(TestPinged(ping_id="glance-1"))
        events.publish(TestPinged(ping_id="glance-2"))
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=125))
    send_events(TestPinged(ping_id="lag-1"), TestPinged(ping_id="lag-2"))
    dead_letter = apps.get_model("events", "DeadLetter")
    for _ in range(3):
        dead_letter.objects.create(
            dlq_topic=fresh_topics.dlq_topic("reservation"),
            dlq_partition=0,
            dlq_offset=dead_letter.objects.count(),
            original_topic=fresh_topics.topic("reservation"),
        )
    client.force_login(User.objects.create_superuser("glance", "g@example.com", "pw"))

    html = client.get("/admin/").content.decode()

    assert "Event pipeline at a glance" in html
    assert cell(html, "glance-backlog") == "2"
    assert 125 <= int(cell(html, "glance-oldest-age").removesuffix(" s")) < 200
    assert cell(html, "glance-lag") == "2 messages"
    assert re.search(
        rf"{re.escape(fresh_topics.topic('reservation'))}\s*</th><td>3</td>", html
    ), "dead letters of the reservation topic"


def test_admin_index_says_when_kafka_does_not_answer(client, settings) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    client.force_login(User.objects.create_superuser("glance", "g@example.com", "pw"))

    html = client.get("/admin/").content.decode()

    assert cell(html, "glance-backlog") == "0"
    assert cell(html, "glance-lag").startswith("unavailable")


def test_the_figures_are_not_computed_outside_the_admin(client, monkeypatch) -> None:
    def explode() -> None:
        raise AssertionError("computed the glance outside the admin")

    monkeypatch.setattr("config.context_processors.glance", explode)
    assert client.get("/api/docs/").status_code == 200
