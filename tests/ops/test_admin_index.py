"""The admin index shows the pipeline at a glance: backlog, oldest age, lag, dead letters.

The lag is what the consumers reported into ConsumerLag (record_lag), read from the
database: rendering the page opens no Kafka client.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

import events
from events.models import ConsumerLag, OutboxEvent
from events.observability.lag import FRESH_FOR, record_lag
from tests.effects.event_types import TestPinged

pytestmark = pytest.mark.django_db


def partition_lag(html: str) -> dict[str, int]:
    """The per-partition lines under "Consumer lag": {"topic[partition]": lag}."""
    rows = re.findall(
        r'class="glance-lag-partition"><th scope="row">(?:&nbsp;)*(.*?)</th>'
        r"<td>(\d+)</td>",
        html,
    )
    return {name: int(lag) for name, lag in rows}


def cell(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">(.*?)</td>', html, re.S)
    assert match, f"no #{element_id} on the admin index"
    return match.group(1).strip()


def test_admin_index_shows_backlog_oldest_age_lag_and_dead_letters(
    client, fresh_topics, settings
) -> None:
    with transaction.atomic():
        events.publish(TestPinged(ping_id="glance-1"))
        events.publish(TestPinged(ping_id="glance-2"))
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=125))
    reservation, reserved = (
        fresh_topics.topic(s) for s in ("reservation", "seat-reserved")
    )
    record_lag(fresh_topics.consumer_group, {(reservation, 0): 2, (reservation, 1): 0})
    record_lag(fresh_topics.consumer_group, {(reserved, 2): 5})
    record_lag("another-group", {(reservation, 0): 1_000})
    dead_letter = apps.get_model("events", "DeadLetter")
    for _ in range(3):
        dead_letter.objects.create(
            dlq_topic=fresh_topics.dlq_topic("reservation"),
            dlq_partition=0,
            dlq_offset=dead_letter.objects.count(),
            original_topic=fresh_topics.topic("reservation"),
        )
    client.force_login(User.objects.create_superuser("glance", "g@example.com", "pw"))
    # No Kafka client is needed to render it: the broker named here does not exist.
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"

    html = client.get("/admin/").content.decode()

    assert "Event pipeline at a glance" in html
    assert cell(html, "glance-backlog") == "2"
    assert 125 <= int(cell(html, "glance-oldest-age").removesuffix(" s")) < 200
    assert cell(html, "glance-lag") == "7 messages", "this group's fresh reports"
    assert partition_lag(html) == {f"{reservation}[0]": 2, f"{reserved}[2]": 5}
    assert re.search(
        rf"{re.escape(fresh_topics.topic('reservation'))}\s*</th><td>3</td>", html
    ), "dead letters of the reservation topic"


def test_lag_reports_older_than_the_freshness_window_are_not_shown(
    client, fresh_topics
) -> None:
    reservation, reserved = (
        fresh_topics.topic(s) for s in ("reservation", "seat-reserved")
    )
    record_lag(fresh_topics.consumer_group, {(reservation, 0): 4, (reserved, 0): 9})
    ConsumerLag.objects.filter(topic=reserved).update(
        reported_at=timezone.now() - FRESH_FOR - timedelta(seconds=1)
    )
    client.force_login(User.objects.create_superuser("glance", "g@example.com", "pw"))

    html = client.get("/admin/").content.decode()
    assert cell(html, "glance-lag") == "4 messages"
    assert partition_lag(html) == {f"{reservation}[0]": 4}

    ConsumerLag.objects.update(reported_at=timezone.now() - timedelta(minutes=5))
    html = client.get("/admin/").content.decode()
    assert cell(html, "glance-lag") == (
        "unavailable (no consumer reported in the last 30 s)"
    )
    assert partition_lag(html) == {}


def test_record_lag_upserts_one_row_per_partition_and_ignores_an_empty_report(
    django_assert_num_queries,
) -> None:
    with django_assert_num_queries(0):
        record_lag("g", {})
    with django_assert_num_queries(1):
        record_lag("g", {("t", 0): 3, ("t", 1): 1})
    ConsumerLag.objects.update(reported_at=timezone.now() - timedelta(minutes=1))
    record_lag("g", {("t", 0): 0})
    rows = {
        (r.topic, r.partition): (r.lag, r.reported_at)
        for r in ConsumerLag.objects.filter(group="g")
    }
    assert rows.keys() == {("t", 0), ("t", 1)}
    assert rows["t", 0][0] == 0 and rows["t", 1][0] == 1
    assert rows["t", 0][1] > rows["t", 1][1], "the report refreshed reported_at"


def test_the_figures_are_not_computed_outside_the_admin(client, monkeypatch) -> None:
    def explode() -> None:
        raise AssertionError("computed the glance outside the admin")

    monkeypatch.setattr("config.context_processors.glance", explode)
    assert client.get("/api/docs/").status_code == 200
