"""Multiprocess mode: /metrics of a service adds up the counters of all its processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INCREMENT = """
import django
django.setup()
from events.observability import metrics
metrics.OUTBOX_PUBLISHED.labels(topic="mp-topic").inc({n})
metrics.OUTBOX_BACKLOG.set({n})
"""
READ = """
import django
django.setup()
from django.test import Client
body = Client(HTTP_HOST="localhost").get("/metrics").content.decode()
print([l for l in body.splitlines() if "mp-topic" in l or l.startswith("outbox_backlog")])
"""


def run(code: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_web_metrics_aggregate_every_process_in_multiprocess_mode(tmp_path) -> None:
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    run(INCREMENT.format(n=3), env)
    run(INCREMENT.format(n=4), env)

    lines = run(READ, env)

    assert 'outbox_events_published_total{topic="mp-topic"} 7.0' in lines
    # Gauges take the most recent value, not a sum.
    assert "outbox_backlog_events 4.0" in lines
