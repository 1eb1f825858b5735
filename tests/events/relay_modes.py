"""The two relays behind one face, for the delivery tests that run against both.

`PollingRelay` runs `manage.py relay_outbox` as a real process; `CdcRelay` registers
the Debezium connector with the project's Kafka Connect worker (infra/connect) and
crashes by `kill -9` of that worker. Both: `start()`, `crash()` (kill -9, then start
again), `stop()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from django.core.management import call_command
from django.db import connection

from tests.events.pipeline import process_log
from tests.events.relay_process import start_relay_process
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONNECT_SH = ROOT / "infra/connect/connect.sh"
# Where connect.sh keeps the worker's pid (its CONNECT_HOME, as the script reads it).
CONNECT_PID = (
    Path(os.environ.get("CONNECT_HOME", ROOT / ".local/connect")) / "connect.pid"
)


def connect_ctl(action: str) -> str:
    """Run `connect.sh ACTION` (start is idempotent); return its output."""
    done = subprocess.run(
        ["bash", str(CONNECT_SH), action], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"connect.sh {action}: {done.stdout}{done.stderr}"
    return done.stdout


class PollingRelay:
    mode = "polling"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_relay_process(self.env, "--poll-interval", "0.2")

    def crash(self) -> None:
        """kill -9 the relay, then start a new one."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            code = self.process.wait(timeout=60)
        finally:
            self.process = None
        # -SIGTERM: stopped before it installed its handler (nothing was in flight).
        assert code in (0, -signal.SIGTERM), f"relay_outbox exited {code}"

    def log(self) -> str:
        return process_log(self.process) if self.process else ""


class CdcRelay:
    """Debezium's connector for the test database, on the shared Connect worker."""

    mode = "cdc"

    def __init__(self) -> None:
        self.started = False
        self.restart_seconds: float | None = None

    def start(self) -> None:
        connect_ctl("start")
        self.started = True  # whatever register got to, stop() cleans it up
        call_command("cdc_connector", "register", "--wait", "90")

    def crash(self) -> None:
        """kill -9 the Connect worker, start it again, wait for the task to run."""
        pid = int(CONNECT_PID.read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), timeout=30, what="the worker to die")
        began = time.monotonic()
        connect_ctl("start")
        wait_until(self.running, timeout=120, interval=0.2, what="the task to run")
        self.restart_seconds = time.monotonic() - began

    def running(self) -> bool:
        from events.cdc.connector import connector_name
        from events.cdc.rest import ConnectClient
        from events.core.conf import pipeline_settings
        from events.management.commands.cdc_connector import is_running

        client = ConnectClient(pipeline_settings().cdc_connect_url)
        return is_running(
            client.status(connector_name(connection.settings_dict["NAME"]))
        )

    def stop(self) -> None:
        """Delete the connector and drop the slot (an abandoned slot keeps the WAL).

        Whatever a failed test left unsent: the tests check what arrived themselves,
        and a slot left behind would keep the shared cluster's WAL.
        """
        if self.started:
            call_command("cdc_connector", "delete", "--drop-slot", "--discard-unread")
            self.started = False

    def log(self) -> str:
        path = ROOT / ".local/connect/logs/connect.log"
        return path.read_text()[-5000:] if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed record: murmur2 of the key, made positive.

    The Java producer's default partitioner (Connect's) and librdkafka's
    `murmur2_random` (the polling relay's) both compute this.
    """
    m, seed = 0x5BD1E995, 0x9747B28C
    length = len(key)
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(key[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[length & ~3 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions
