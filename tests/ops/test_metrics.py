"""Prometheus counters and audit lines after real events went through relay and consumer."""

from __future__ import annotations

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

import events
from events.observability.audit import DEAD_LETTERED, PROCESSED, PUBLISHED, RETRIED
from tests.effects.event_types import TestPinged
from tests.effects.models import Effect
from tests.events.pipeline import running_consumer
from tests.events.relay_process import running_relay
from tests.ops.capture import json_log_lines
from tests.waiting import wait_until

HANDLER = "tests.effects.handlers.record_ping"
N = 25


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db(transaction=True)
def test_counters_and_audit_lines_count_every_event_once(fresh_topics) -> None:
    topic = fresh_topics.topic("reservation")
    names = {
        "published": ("outbox_events_published_total", {"topic": topic}),
        "processed": (
            "consumer_events_processed_total",
            {"topic": topic, "handler": HANDLER},
        ),
        "retried": (
            "consumer_events_retried_total",
            {"topic": topic, "handler": HANDLER},
        ),
        "dead_lettered": (
            "consumer_events_dead_lettered_total",
            {"topic": topic, "handler": HANDLER},
        ),
        "processed_retry": (
            "consumer_events_processed_total",
            {"topic": fresh_topics.retry_topics("reservation")[0], "handler": HANDLER},
        ),
        "handler_runs": ("consumer_handler_seconds_count", {"handler": HANDLER}),
    }
    before = {key: sample(name, **labels) for key, (name, labels) in names.items()}

    with json_log_lines("events.audit") as logs:
        with transaction.atomic():
            for n in range(N):
                events.publish(TestPinged(ping_id=f"m-{n}", n=n))
            events.publish(TestPinged(ping_id="m-flaky", mode="flaky", fail_times=1))
            events.publish(TestPinged(ping_id="m-poison", mode="poison"))
        with running_relay(poll_interval=0.2), running_consumer():
            wait_until(
                lambda: (
                    Effect.objects.filter(ping_id__startswith="m-").count() == N + 1
                ),
                what="N + 1 effects",
            )
            wait_until(
                lambda: logs.where(event_outcome=DEAD_LETTERED),
                what="the dead letter",
            )

    after = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    delta = {key: after[key] - before[key] for key in names}
    # Runs rolled back by a failure in the same transaction are run again: at least
    # one observation per run, not exactly one.
    assert delta.pop("handler_runs") >= N + 3
    assert delta == {
        "published": N + 2,
        "processed": N,
        "processed_retry": 1,  # the flaky one, from the first retry topic
        "retried": 1,
        "dead_lettered": 1,
    }
    assert len(logs.where(event_outcome=PUBLISHED, topic=topic)) == N + 2
    processed = logs.where(event_outcome=PROCESSED, handler=HANDLER)
    assert len(processed) == N + 1
    assert len({line["event_id"] for line in processed}) == N + 1
    (retried,) = logs.where(event_outcome=RETRIED)
    assert retried["error"].startswith("ConnectionError")
    assert retried["trace_id"] and retried["topic"] == topic
    (dead,) = logs.where(event_outcome=DEAD_LETTERED)
    assert dead["error"].startswith("PoisonMessage")
    assert {"event_id", "event_type", "partition", "offset", "trace_id"} <= set(dead)


def test_web_metrics_endpoint_serves_the_pipeline_metrics(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    for name in (
        "outbox_events_published_total",
        "consumer_events_processed_total",
        "consumer_handler_seconds",
        "outbox_backlog_events",
        "dead_letters",
    ):
        assert f"# TYPE {name} " in body, name
