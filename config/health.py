"""Operational endpoints of the web process: liveness, readiness, Prometheus metrics.

- `/healthz`: the process answers; touches nothing else (a liveness probe must not
  fail because a dependency is down, or the orchestrator restarts healthy workers).
- `/readyz`: the database and Kafka answer; 503 naming the failed ones otherwise.
- `/metrics`: this process's metrics, or every gunicorn worker's in multiprocess mode.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events.core.kafka import KafkaException, build_admin
from events.observability import metrics

logger = logging.getLogger(__name__)


@require_GET
def healthz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def database_ready() -> str | None:
    """None if the default database answers a query, else what went wrong."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def kafka_ready() -> str | None:
    """None if a broker answers a metadata request in time, else what went wrong."""
    timeout = settings.HEALTH_KAFKA_TIMEOUT_SECONDS
    try:
        # Fail fast instead of librdkafka's default of retrying for a long time.
        admin = build_admin(
            **{"socket.connection.setup.timeout.ms": int(timeout * 1000)}
        )
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return f"KafkaException: {exc}"
    if not metadata.brokers:
        return "no broker in the metadata"
    return None


@require_GET
def readyz(_request: HttpRequest) -> JsonResponse:
    checks = {"database": database_ready(), "kafka": kafka_ready()}
    failed = {name: error for name, error in checks.items() if error is not None}
    if failed:
        logger.warning("not ready: %s", failed)
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: error or "ok" for name, error in checks.items()},
        "failed": sorted(failed),
    }
    return JsonResponse(body, status=503 if failed else 200)


@require_GET
def metrics_view(_request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST
    )
