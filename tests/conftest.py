"""Shared fixtures: the real Kafka broker, this run's topics, and Kafka read helpers.

Every topic name carries a prefix unique to the test run (config.settings.test), so
tests can run while `make run` uses the same broker, and runs never see each other.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.conf import PipelineSettings, pipeline_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker's address; starts the project's broker when none was given."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        subprocess.run(["bash", str(ROOT / "infra/kafka/kafka.sh"), "start"], check=True)
    return pipeline_settings().bootstrap_servers


@pytest.fixture(scope="session")
def kafka_topics(kafka_bootstrap: str) -> Iterator[PipelineSettings]:
    """Create every pipeline topic under this run's prefix; delete them afterwards."""
    from events.kafka import build_admin
    from events.topics import create_topics

    conf = pipeline_settings()
    create_topics()
    yield conf
    admin = build_admin()
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(conf.topic_prefix)]
    if ours:
        for future in admin.delete_topics(ours, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - cleanup must not fail the run
                pass
