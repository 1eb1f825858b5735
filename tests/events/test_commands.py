"""The management commands: topic creation, and refusing to start without topics."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from events.core.kafka import build_admin

pytestmark = pytest.mark.django_db


def test_create_topics_creates_everything_once_and_then_changes_nothing(
    kafka_topics, settings
) -> None:
    settings.KAFKA_TOPIC_PREFIX = (
        f"{kafka_topics.topic_prefix}ct-{uuid.uuid4().hex[:4]}-"
    )
    first, second = io.StringIO(), io.StringIO()
    call_command("create_topics", stdout=first)
    call_command("create_topics", stdout=second)
    assert "16 created, 0 already there" in first.getvalue()
    assert "0 created, 16 already there" in second.getvalue()
    topics = build_admin().list_topics(timeout=10).topics
    dlq = f"{settings.KAFKA_TOPIC_PREFIX}seat-reserved-dlq"
    retry = f"{settings.KAFKA_TOPIC_PREFIX}payment-complete-topic-retry-2"
    assert dlq in topics and retry in topics
    assert len(topics[dlq].partitions) == settings.KAFKA_TOPIC_PARTITIONS


def test_topics_get_the_reports_seven_day_retention(kafka_topics) -> None:
    from confluent_kafka.admin import ConfigResource

    admin = build_admin()
    resource = ConfigResource("topic", kafka_topics.topic("seat-reserved"))
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["retention.ms"].value == str(7 * 24 * 3600 * 1000)


@pytest.mark.parametrize("command", ["relay_outbox", "run_consumers"])
def test_commands_refuse_to_start_when_their_topics_are_missing(
    command, kafka_bootstrap, settings
) -> None:
    settings.KAFKA_TOPIC_PREFIX = f"missing-{uuid.uuid4().hex[:6]}-"
    with pytest.raises(
        CommandError, match="topics missing .*Run `manage.py create_topics`"
    ):
        call_command(command)


def test_run_consumers_rejects_an_unknown_stream(kafka_topics) -> None:
    with pytest.raises(CommandError, match="unknown streams no-such-stream"):
        call_command("run_consumers", "--topics", "no-such-stream")


@pytest.mark.parametrize("option", ["--concurrency", "--threads"])
def test_run_consumers_rejects_fewer_than_one_consumer(option) -> None:
    with pytest.raises(CommandError, match=f"{option} must be at least 1"):
        call_command("run_consumers", option, "0")


@pytest.mark.parametrize(
    ("args", "needed"),
    [(["--threads", "3"], 4), (["--threads", "4", "--no-dead-letters"], 4)],
)
def test_run_consumers_refuses_more_threads_than_its_database_pool_holds(
    settings, args, needed
) -> None:
    settings.DATABASE_POOL_MAX_SIZE = 3
    with pytest.raises(
        CommandError, match=f"{needed} database connections are needed per process"
    ):
        call_command("run_consumers", *args)


def test_commands_say_clearly_when_kafka_is_unreachable(settings) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    with pytest.raises(CommandError, match="cannot reach Kafka at 127.0.0.1:1"):
        call_command("relay_outbox")
