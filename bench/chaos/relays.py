"""What sends the outbox in a chaos run: `relay_outbox` processes, or Kafka Connect
workers running the CDC relay's Debezium connector.

Either way the stack starts N processes and restarts each after it dies, and the fault
injector kills or freezes them: a relay process, or a worker's JVM. The Connect workers
form one group (a task runs on one of them; the others take it over after
`scheduled.rebalance.max.delay.ms`), each with a CONNECT_HOME, REST port and group of
the run's own, so a kill -9 disturbs no other worker on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]
CONNECT_SH = ROOT / "infra" / "connect" / "connect.sh"
CONNECT_BASE_PORT = 18083


class Relays(Protocol):
    """How the stack starts relay number `n`, and which one a kill should hit."""

    mode: str

    def prepare(self, env: dict[str, str]) -> None: ...

    def command(self, n: int) -> tuple[list[str], dict[str, str]]: ...

    def after_start(self, env: dict[str, str], logs: Path) -> None: ...

    def busiest(self) -> int | None: ...

    def clean_up(self, env: dict[str, str]) -> None: ...


@dataclass
class PollingRelays:
    """`relay_outbox` with small batches: more batches in flight, so a kill lands
    between a broker's acknowledgement and the row's delete more often."""

    mode: str = "polling"

    def prepare(self, env: dict[str, str]) -> None:
        pass

    def command(self, n: int) -> tuple[list[str], dict[str, str]]:
        manage = [sys.executable, str(ROOT / "manage.py")]
        return [*manage, "relay_outbox", "--batch-size", "50"], {}

    def after_start(self, env: dict[str, str], logs: Path) -> None:
        pass

    def busiest(self) -> int | None:
        """Any of them: with shards every relay leads some, without one leads."""
        return None

    def clean_up(self, env: dict[str, str]) -> None:
        pass


@dataclass
class ConnectWorkers:
    """Kafka Connect workers (infra/connect/connect.sh run, in the foreground: the
    process the stack holds is the JVM) and the outbox connector on them."""

    label: str
    database: str
    count: int
    replication_factor: int
    mode: str = "cdc"

    def home(self, n: int) -> Path:
        """Kept between runs: the jars are installed there on first use only."""
        return ROOT / ".local" / f"connect-chaos-{n}"

    def port(self, n: int) -> int:
        return CONNECT_BASE_PORT + n

    @property
    def group(self) -> str:
        """Under the run's topic prefix, so its config/offset/status topics go with
        the run's topics at the end."""
        return f"chaos-{self.label}-connect"

    @property
    def connector(self) -> str:
        from events.cdc.connector import connector_name

        return connector_name(self.database)

    def worker_env(self, n: int) -> dict[str, str]:
        return {
            "CONNECT_HOME": str(self.home(n)),
            "CONNECT_REST_PORT": str(self.port(n)),
            "CONNECT_GROUP_ID": self.group,
            "CONNECT_REPLICATION_FACTOR": str(self.replication_factor),
            "CONNECT_HEAP_OPTS": "-Xms128m -Xmx384m",
        }

    def prepare(self, env: dict[str, str]) -> None:
        """Stop a worker an unfinished run left in a home (it would answer on the
        port in this run's place), and install the jars into each home (from the
        local Maven cache after the first time) before any kill can interrupt that."""
        for n in range(self.count):
            for action in ("stop", "install"):
                subprocess.run(
                    ["bash", str(CONNECT_SH), action],
                    env=dict(env, **self.worker_env(n)),
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            if self._get(f"{self.url(n)}/") is not None:
                raise RuntimeError(
                    f"{self.url(n)} answers, but no worker of ours is on it"
                )

    def command(self, n: int) -> tuple[list[str], dict[str, str]]:
        return ["bash", str(CONNECT_SH), "run"], self.worker_env(n)

    def after_start(self, env: dict[str, str], logs: Path) -> None:
        """Register the connector (publication, slot, config) and wait until its task
        runs: `publish` refuses to write before the slot exists."""
        self._wait_for(0)
        with (logs / "cdc_connector.log").open("ab") as log:
            done = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "cdc_connector", "register"]
                + ["--wait", "180"],
                env=dict(env, CDC_CONNECT_URL=self.url(0)),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            raise RuntimeError(f"cdc_connector register failed; see {logs}")

    def busiest(self) -> int | None:
        """The worker the connector's task runs on (None while it runs nowhere)."""
        for n in range(self.count):
            status = self._get(f"{self.url(n)}/connectors/{self.connector}/status")
            if status is None:
                continue
            for task in status.get("tasks", []):
                port = str(task.get("worker_id", "")).rsplit(":", 1)[-1]
                if port.isdigit() and task.get("state") == "RUNNING":
                    return int(port) - CONNECT_BASE_PORT
            return None
        return None

    def clean_up(self, env: dict[str, str]) -> None:
        """The heartbeat topic is named after the database, not the run's prefix."""
        from events.cdc.connector import heartbeat_topic
        from events.core.topics import delete_topics_with_prefix

        delete_topics_with_prefix(heartbeat_topic(self.database))

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port(n)}"

    def _wait_for(self, n: int) -> None:
        """Block until worker `n` answers (the stack just started it)."""
        deadline = time.monotonic() + 180
        while self._get(f"{self.url(n)}/connectors") is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka Connect did not answer on {self.url(n)}")
            time.sleep(0.5)

    def _get(self, url: str) -> Any:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return json.loads(response.read().decode() or "null")
        except (urllib.error.URLError, OSError, ValueError):
            return None
