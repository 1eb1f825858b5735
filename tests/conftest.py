"""Shared fixtures: the real Kafka broker, this run's topics, and Kafka read helpers.

Every topic name carries a prefix unique to the test run (config.settings.test), so
tests can run while `make run` uses the same broker, and runs never see each other.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.core.conf import PipelineSettings, pipeline_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker's address; starts the project's broker when none was given."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        subprocess.run(
            ["bash", str(ROOT / "infra/kafka/kafka.sh"), "start"], check=True
        )
    return pipeline_settings().bootstrap_servers


@pytest.fixture(scope="session")
def kafka_topics(kafka_bootstrap: str) -> Iterator[PipelineSettings]:
    """Create every pipeline topic under this run's prefix; delete them afterwards."""
    from events.core.topics import create_topics, delete_topics_with_prefix

    conf = pipeline_settings()
    create_topics()
    yield conf
    delete_topics_with_prefix(conf.topic_prefix)


def child_env() -> dict[str, str]:
    """Environment for a `manage.py` child process that shares this test's DB and topics."""
    from django.db import connection

    conf = pipeline_settings()
    s = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        KAFKA_TOPIC_PREFIX=conf.topic_prefix,
        KAFKA_CONSUMER_GROUP=conf.consumer_group,
        KAFKA_BOOTSTRAP_SERVERS=conf.bootstrap_servers,
        DATABASE_URL=(
            f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:"
            f"{s['PORT'] or 5432}/{s['NAME']}"
        ),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def subprocess_env(
    kafka_topics: PipelineSettings, transactional_db: None
) -> dict[str, str]:
    return child_env()


@pytest.fixture
def fresh_topics(kafka_topics: PipelineSettings, settings: Any) -> PipelineSettings:
    """Topics and a consumer group of this test's own, so no other test's messages show."""
    from events.core.topics import create_topics

    label = uuid.uuid4().hex[:6]
    settings.KAFKA_TOPIC_PREFIX = f"{kafka_topics.topic_prefix}{label}-"
    settings.KAFKA_CONSUMER_GROUP = f"{kafka_topics.topic_prefix}{label}-group"
    create_topics()
    return pipeline_settings()


@pytest.fixture(scope="session")
def spare_broker() -> Iterator[str]:
    """A second, disposable broker that a test may stop and start at will."""
    env = dict(
        os.environ,
        KAFKA_HOME=str(ROOT / ".local/kafka-spare"),
        KAFKA_PORT="19092",
        KAFKA_CONTROLLER_PORT="19093",
    )
    script = str(ROOT / "infra/kafka/kafka.sh")
    subprocess.run(["bash", script, "start"], check=True, env=env)
    yield "127.0.0.1:19092"
    subprocess.run(["bash", script, "stop"], check=False, env=env)


def spare_broker_ctl(action: str) -> None:
    env = dict(
        os.environ,
        KAFKA_HOME=str(ROOT / ".local/kafka-spare"),
        KAFKA_PORT="19092",
        KAFKA_CONTROLLER_PORT="19093",
    )
    subprocess.run(
        ["bash", str(ROOT / "infra/kafka/kafka.sh"), action], check=True, env=env
    )
