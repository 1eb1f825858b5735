"""Template context: the pipeline figures shown on the admin index ("at a glance")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from events.maintenance.housekeeping import (
    PipelineSnapshot,
    consumer_group_lag,
    pipeline_snapshot,
)


@dataclass
class Glance:
    snapshot: PipelineSnapshot
    # (topic, partition, lag) of the main topics; None when Kafka did not answer.
    lag: list[tuple[str, int, int]] | None
    total_lag: int | None
    dead_letters: dict[str, int] | None  # new dead letters per original topic


def glance() -> Glance:
    """Read the figures: outbox from the database, lag from the broker (short timeout)."""
    snapshot = pipeline_snapshot()
    lag = consumer_group_lag(timeout=1.0)
    rows = sorted((t, p, n) for (t, p), n in lag.items()) if lag is not None else None
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
