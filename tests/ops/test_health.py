"""Liveness and readiness: /healthz, /readyz and the relay/consumer heartbeats."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server

from config import healthcheck
from tests.events.pipeline import running_consumer
from tests.events.relay_process import running_relay
from tests.waiting import wait_until


def test_healthz_answers_without_touching_the_database(client) -> None:
    # No django_db mark: any query would raise here.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_kafka_down_with_503_and_recovers(
    client, settings, kafka_bootstrap
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}

    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    settings.HEALTH_KAFKA_TIMEOUT_SECONDS = 1.0
    started = time.monotonic()
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["failed"] == ["kafka"]
    assert down.json()["checks"]["database"] == "ok"
    assert time.monotonic() - started < 5

    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap
    again = client.get("/readyz")
    assert again.status_code == 200, again.content


@pytest.mark.django_db
def test_readyz_reports_the_database_down(client, monkeypatch) -> None:
    monkeypatch.setattr("config.health.database_ready", lambda: "OperationalError: x")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "database" in response.json()["failed"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_accepts_a_fresh_heartbeat_and_refuses_a_stale_one() -> None:
    registry = CollectorRegistry()
    beat = Gauge("test_last_loop_timestamp_seconds", "t", registry=registry)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        args = ["--port", str(port), "--metric", "test_last_loop_timestamp_seconds"]
        assert healthcheck.main([*args]) == 1  # never beat yet
        beat.set_to_current_time()
        assert healthcheck.main([*args, "--max-age", "30"]) == 0
        beat.set(time.time() - 120)
        assert healthcheck.main([*args, "--max-age", "30"]) == 1
        # A second process expected on port + 1 that does not answer.
        beat.set_to_current_time()
        assert healthcheck.main([*args, "--count", "2"]) == 1
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.django_db(transaction=True)
def test_relay_and_consumer_loops_beat(fresh_topics) -> None:
    def relay() -> float:
        return REGISTRY.get_sample_value("outbox_relay_last_loop_timestamp_seconds")

    def consumer() -> float:
        return REGISTRY.get_sample_value("consumer_last_loop_timestamp_seconds")

    before = time.time()
    with running_relay(poll_interval=0.2), running_consumer():
        wait_until(
            lambda: relay() > before and consumer() > before,
            what="both heartbeats",
        )
        first = relay()
        wait_until(
            lambda: relay() > first + 0.2,
            what="the relay's next beat while idle",
        )
