"""A real gunicorn with the project's config/gunicorn.py, on this test's database."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import ROOT, child_env
from tests.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_gunicorn(**extra_env: str) -> Iterator[str]:
    """Start gunicorn as `make run` does (pool on, DEBUG off); yield its base URL.

    `extra_env` overrides settings for this server only (pool size, workers, ...).
    The server's log is printed if it fails to start.
    """
    port = free_port()
    env = child_env()
    env.pop("DATABASE_POOL_MAX_SIZE", None)  # config/gunicorn.py: one per thread
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", **extra_env)
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py"]
    command += ["config.wsgi:application"]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: _answers(url) or server.poll() is not None,
                timeout=30,
                what="gunicorn to answer /healthz",
            )
            if server.poll() is not None:
                log.seek(0)
                raise AssertionError(f"gunicorn exited:\n{log.read().decode()}")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
