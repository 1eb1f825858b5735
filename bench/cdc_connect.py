"""Kafka Connect for the benchmarks: this database's connector on a worker, and a worker
of the benchmark's own.

Why two: the drain and the latency phases use the worker `make bench` starts
(CDC_CONNECT_URL, 127.0.0.1:8083 by default), as a deployment would, one worker serving
every database's connector. The recovery measurement kill -9s a worker, so it starts
one of its own (`BenchWorker`: another CONNECT_HOME, REST port and group, hence its own
config/offset/status topics) and never touches the shared one, which other people's
tests may be using.

Every connector is registered and deleted through `manage.py cdc_connector` (the
operator's path: publication, slot, offsets reset for a new slot), with
CDC_CONNECT_URL overridden to the worker in question.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import ROOT

CONNECT_SH = ROOT / "infra" / "connect" / "connect.sh"


class Connector:
    """The connector `outbox-<this database>` on the worker at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @property
    def name(self) -> str:
        from django.db import connection

        from events.cdc.connector import connector_name

        return connector_name(connection.settings_dict["NAME"])

    def client(self) -> Any:
        from events.cdc.rest import ConnectClient

        return ConnectClient(self.url)

    def _command(self, *args: str) -> str:
        from django.core.management import call_command
        from django.test import override_settings

        out = io.StringIO()
        with override_settings(CDC_CONNECT_URL=self.url, OUTBOX_RELAY="cdc"):
            call_command("cdc_connector", *args, stdout=out)
        return out.getvalue()

    def register(self, *, wait: float = 120.0) -> float:
        """Register (slot, publication, config) and wait until the task runs; return
        the seconds that took."""
        started = time.monotonic()
        self._command("register", "--wait", str(wait))
        return round(time.monotonic() - started, 2)

    def delete(self) -> None:
        """Delete the connector and drop the slot: an abandoned slot keeps the WAL.

        Also with events left unsent (a run that failed midway): the benchmark's
        database is disposable, its slot is not.
        """
        self._command("delete", "--drop-slot", "--discard-unread")

    def status(self) -> dict[str, Any] | None:
        return self.client().status(self.name)

    def running(self) -> bool:
        from events.management.commands.cdc_connector import is_running

        try:
            return is_running(self.status())
        except Exception:  # noqa: BLE001 - a worker that is down is "not running"
            return False

    def stop(self, *, timeout: float = 60.0) -> None:
        """KIP-875 stop (offsets flushed, no task), and wait until it is STOPPED."""
        self.client().stop(self.name)
        self._wait(lambda s: s["connector"]["state"] == "STOPPED" and not s["tasks"],
                   timeout, "STOPPED")  # fmt: skip

    def resume(self) -> None:
        self.client().resume(self.name)

    def wait_running(self, *, timeout: float = 120.0) -> None:
        self._wait(lambda _s: self.running(), timeout, "RUNNING")

    def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
            except Exception:  # noqa: BLE001 - worker restarting
                status = None
            if status is not None and done(status):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"connector {self.name} not {what}: {status}")
            time.sleep(0.1)

    def worker_pid(self) -> int | None:
        """The JVM of the worker at `url` (found by the listener in its properties)."""
        port = self.url.rsplit(":", 1)[-1]
        found = subprocess.run(
            ["pgrep", "-f", "ConnectDistributed"], capture_output=True, text=True
        )
        for pid in (int(p) for p in found.stdout.split()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                props = Path(next(a for a in reversed(argv) if a).decode())
                if f"listeners=http://127.0.0.1:{port}\n" in props.read_text():
                    return pid
            except (OSError, StopIteration, UnicodeDecodeError):
                continue
        return None


def walsender_pid() -> int | None:
    """The walsender streaming this database's slot to Debezium (None while idle)."""
    from django.db import connection

    from events.cdc.database import slot_name

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
            [slot_name()],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] else None


def debezium_backends() -> list[tuple[int, str, str]]:
    """(pid, backend_type, application_name) of this database's backends that serve
    Debezium: the walsender and the JDBC connection it keeps beside it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_type, application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (backend_type = 'walsender' OR application_name ILIKE '%%debezium%%')"
        )
        return [(int(p), str(t), str(a)) for p, t, a in cursor.fetchall()]


@dataclass(frozen=True)
class BenchWorker:
    """A Connect worker of the benchmark's own, started and stopped with connect.sh.

    Its own CONNECT_HOME (jars installed there on first use, from the local Maven
    cache after the first time), REST port and group id, so a kill -9 of it disturbs
    no one else's connectors.
    """

    port: int = int(os.environ.get("BENCH_CONNECT_REST_PORT", "8093"))

    @property
    def home(self) -> Path:
        """Per port, so two runs on different ports (a bench, the cdc test) do not
        share a pid file."""
        return ROOT / ".local" / f"connect-bench-{self.port}"

    @property
    def group(self) -> str:
        return f"outbox-connect-bench-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONNECT_HOME": str(self.home),
            "CONNECT_REST_PORT": str(self.port),
            "CONNECT_GROUP_ID": self.group,
        }

    def ctl(self, action: str) -> float:
        """`connect.sh ACTION` for this worker; return the seconds it took."""
        started = time.monotonic()
        done = subprocess.run(
            ["bash", str(CONNECT_SH), action],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"connect.sh {action}: {done.stdout}{done.stderr}")
        return round(time.monotonic() - started, 2)

    def pid(self) -> int:
        return int((self.home / "connect.pid").read_text())
