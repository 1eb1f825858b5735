"""A real `celery worker` process for tests, on the test's database and its own queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from config.celery_app import app
from tests.conftest import ROOT, child_env

BROKER_URL = "redis://127.0.0.1:6379/5"


@contextmanager
def running_worker(
    *args: str, broker_url: str = BROKER_URL, **extra_env: str
) -> Iterator[str]:
    """A real `celery worker` on this test's database, consuming a queue of its own;
    yield the queue name."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(child_env(), CELERY_BROKER_URL=broker_url, **extra_env)
    command = [sys.executable, "-m", "celery", "-A", "config", "worker"]
    command += ["--queues", queue, "--loglevel", "INFO", *args]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        previous = app.conf.broker_url
        app.conf.broker_url = broker_url
        _logs[queue] = log
        try:
            yield queue
        finally:
            del _logs[queue]
            app.conf.broker_url = previous
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


_logs: dict[str, IO[bytes]] = {}


def worker_log(queue: str) -> str:
    """What the worker consuming `queue` (see running_worker) has logged so far."""
    # pread: the worker writes through the same open file, so moving its offset
    # here would move where the worker writes.
    fd = _logs[queue].fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
