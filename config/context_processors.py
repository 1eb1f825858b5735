"""Template context: the pipeline figures shown on the admin index ("at a glance")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from events.core.conf import pipeline_settings
from events.maintenance.housekeeping import PipelineSnapshot, pipeline_snapshot
from events.observability.lag import FRESH_FOR, reported_lag


@dataclass
class Glance:
    """The admin index's figures: outbox, consumer lag, new dead letters."""

    snapshot: PipelineSnapshot
    # (topic, partition, lag) of the main topics, as the consumers last reported it;
    # None when none of them reported in the last `lag_fresh_for_seconds`.
    lag: list[tuple[str, int, int]] | None
    total_lag: int | None
    dead_letters: dict[str, int] | None  # new dead letters per original topic
    lag_fresh_for_seconds: int = int(FRESH_FOR.total_seconds())


def glance() -> Glance:
    """Read the figures, all from the database: no Kafka client is opened per render
    (the consumers report their lag into ConsumerLag, events.observability.lag)."""
    snapshot = pipeline_snapshot()
    conf = pipeline_settings()
    lag = reported_lag(
        group=conf.consumer_group,
        topics=[conf.topic(stream) for stream in conf.streams],
    )
    rows = sorted((t, p, n) for (t, p), n in lag.items()) if lag else None
    return Glance(
        snapshot=snapshot,
        lag=rows,
        total_lag=sum(n for *_, n in rows) if rows is not None else None,
        dead_letters=(
            snapshot.dead_letters_by_topic("new")
            if snapshot.dead_letters is not None
            else None
        ),
    )


def pipeline_glance(request: HttpRequest) -> dict[str, Any]:
    """Offer `pipeline_glance` to the admin index only, and compute it lazily there:
    the template engine calls it when (and if) the template reads it."""
    user = getattr(request, "user", None)
    if not request.path.startswith("/admin/") or not getattr(user, "is_staff", False):
        return {}
    return {"pipeline_glance": glance}
