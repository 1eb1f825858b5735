"""What the pipeline's long-running commands share: preflight checks and shutdown.

`relay_outbox` and `run_consumers` (and its supervised children) start the same way:
the topics they need must exist, metrics may be served, and SIGTERM or Ctrl-C ask the
loop to finish what is in flight.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from django.core.management.base import CommandError

from events.core.conf import PipelineSettings
from events.core.kafka import KafkaException, missing_topics

logger = logging.getLogger("events")


def require_topics(conf: PipelineSettings, topics: list[str]) -> None:
    """Raise a CommandError naming what is missing, or that Kafka is unreachable."""
    try:
        missing = missing_topics(topics)
    except KafkaException as exc:
        raise CommandError(
            f"cannot reach Kafka at {conf.bootstrap_servers}: {exc}"
        ) from exc
    if missing:
        raise CommandError(
            f"topics missing on {conf.bootstrap_servers}: {', '.join(missing)}. "
            "Run `manage.py create_topics` first."
        )


def serve_metrics(port: int | None) -> None:
    """Serve this process's Prometheus metrics on `port` (nothing if None or 0)."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port)


def stop_on_signals(
    stop: Callable[[], None], *, log: logging.Logger, doing: str
) -> None:
    """Call `stop` on SIGTERM and SIGINT, logging `doing` (what happens next)."""

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: %s", signum, doing)
        stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
