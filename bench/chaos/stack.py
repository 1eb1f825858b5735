"""The system under test: gunicorn, relays (two by default: `relay_outbox` processes, or
Kafka Connect workers with the CDC connector, bench/chaos/relays.py),
`run_consumers --concurrency 2`, and the Kafka node(s) they use, with the handles the
fault injector needs.

Relays are restarted by the stack after they die, as systemd or Kubernetes would; the
consumers' own supervisor restarts their children; gunicorn's master its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.chaos.relays import PollingRelays, Relays

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = ROOT / "infra" / "kafka" / "kafka.sh"


@dataclass
class Brokers:
    """One Kafka node of the run's own, or the project's local 3-node cluster."""

    nodes: int
    home: Path = ROOT / ".local" / "kafka-chaos"
    port: int = 19292

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, **extra)
        if self.nodes == 1:
            env.update(
                KAFKA_NODES="1",
                KAFKA_HOME=str(self.home),
                KAFKA_PORT=str(self.port),
                KAFKA_CONTROLLER_PORT=str(self.port + 1),
            )
        else:
            env["KAFKA_NODES"] = str(self.nodes)
        return env

    @property
    def bootstrap(self) -> str:
        if self.nodes == 1:
            return f"127.0.0.1:{self.port}"
        out = self._script("bootstrap", capture=True)
        return out.strip().splitlines()[-1]

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def kill(self, node: int) -> None:
        if self.nodes == 1:
            pid = int((self.home / "kafka.pid").read_text())
            os.kill(pid, signal.SIGKILL)
        else:
            self._script("node-kill", str(node))

    def halt(self, node: int) -> None:
        """Stop one node cleanly (controlled shutdown)."""
        if self.nodes == 1:
            self._script("stop")
        else:
            self._script("node-stop", str(node))

    def revive(self, node: int) -> None:
        """Start the node again and wait until it serves."""
        if self.nodes == 1:
            self._script("start")
        else:
            self._script("node-start", str(node))

    def _script(self, *args: str, capture: bool = False) -> str:
        run = subprocess.run(
            ["bash", str(KAFKA_SCRIPT), *args],
            env=self.env(),
            check=True,
            capture_output=capture,
            text=True,
            stdout=None if capture else subprocess.DEVNULL,
        )
        return run.stdout or ""


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path
    web_port: int
    relay_count: int = 2
    relay_kind: Relays = field(default_factory=PollingRelays)
    relays: list[subprocess.Popen[bytes]] = field(default_factory=list)
    consumers: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    relay_restarts: int = 0
    _stopping: bool = False
    _watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        """Relays first: in cdc mode `publish` refuses until the connector's slot
        exists, which its registration (after the workers answer) creates."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.relay_kind.prepare(self.env)
        self.relays = [self._relay(n) for n in range(self.relay_count)]
        self.relay_kind.after_start(self.env, self.logs)
        self.web = self._spawn(
            "web",
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py"]
            + ["config.wsgi:application"],
            GUNICORN_BIND=f"127.0.0.1:{self.web_port}",
        )
        self.consumers = self._spawn(
            "consumers", self._manage("run_consumers", "--concurrency", "2")
        )
        deadline = time.monotonic() + 60
        while not self._web_answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start; see {self.logs}/web.log")
            time.sleep(0.2)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.join(timeout=5)  # no restart after the list below is taken
        processes = [*self.relays, self.consumers, self.web]
        for process in processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()

    def consumer_children(self) -> list[int]:
        """Pids of the consumer supervisor's children (consumers and the DLQ store)."""
        assert self.consumers is not None
        path = Path(f"/proc/{self.consumers.pid}/task/{self.consumers.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def live_relays(self) -> list[subprocess.Popen[bytes]]:
        """The relays running now, waiting for the stack's restarts if need be."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [r for r in self.relays if r.poll() is None]
            if live:
                return live
            time.sleep(0.1)
        raise RuntimeError("no relay came back within 30 s")

    def busiest_relay(self) -> subprocess.Popen[bytes] | None:
        """The relay whose death stops the flow (the Connect task's worker), if one
        is; else None (any relay will do)."""
        n = self.relay_kind.busiest()
        if n is None or n >= len(self.relays) or self.relays[n].poll() is not None:
            return None
        return self.relays[n]

    def _relay(self, number: int) -> subprocess.Popen[bytes]:
        command, extra = self.relay_kind.command(number)
        return self._spawn(f"relay-{number}", command, **extra)

    def _watch(self) -> None:
        while not self._stopping:
            for n, relay in enumerate(self.relays):
                if relay.poll() is not None and not self._stopping:
                    time.sleep(0.5)  # a service manager's restart delay
                    if self._stopping:
                        return
                    self.relays[n] = self._relay(n)
                    self.relay_restarts += 1
            time.sleep(0.1)

    def _manage(self, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / "manage.py"), *args]

    def _spawn(
        self, name: str, command: list[str], **extra: str
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            command,
            env=dict(self.env, **extra),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _web_answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
