"""Driving the consumer in tests: send events as the relay would, run the runner."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

from events.consumer.runner import ConsumerRunner
from events.core.conf import pipeline_settings
from events.core.kafka import build_producer
from events.core.types import Event, new_envelope

ROOT = Path(__file__).resolve().parents[2]


def send_events(*events: Event) -> list[str]:
    """Produce events with the relay's envelope and headers; return their event ids."""
    producer = build_producer()
    ids = []
    for event in events:
        event_id, envelope = new_envelope(event)
        send_raw(
            pipeline_settings().topic(event.stream),
            key=event.key.encode(),
            value=_json(envelope),
            headers=[
                ("event_id", str(event_id).encode()),
                ("event_type", event.event_type.encode()),
            ],
            producer=producer,
        )
        ids.append(str(event_id))
    assert producer.flush(30) == 0
    return ids


def send_raw(
    topic: str,
    *,
    key: bytes,
    value: bytes,
    headers: list | None = None,
    producer: Any = None,
) -> None:
    own = producer is None
    producer = producer or build_producer()
    producer.produce(topic, key=key, value=value, headers=headers or [])
    if own:
        assert producer.flush(30) == 0


@contextmanager
def running_consumer(**options: Any) -> Iterator[ConsumerRunner]:
    runner = ConsumerRunner(poll_timeout=0.1, **options)

    def run() -> None:
        try:
            runner.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="consumer", daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "consumer did not stop"


def start_consumer_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return start_manage_process(env, "run_consumers", *args)


def start_manage_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start `manage.py ARGS`; its log goes to a file (see `process_log`).

    Not a pipe: a chatty child would fill the pipe and block while the test waits.
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    _logs[process.pid] = log
    return process


def process_log(process: subprocess.Popen[bytes]) -> str:
    log = _logs[process.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


_logs: dict[int, Any] = {}


def _json(data: Any) -> bytes:
    import json

    return json.dumps(data).encode()
