"""The system under test of bench.api: gunicorn, the relay and the consumers.

`Stack` starts them as `make run` does (Procfile), as subprocesses of the step, on the
step's database and topics, each in a session of its own. `cpu_groups` names the
processes each component's CPU is charged to, PostgreSQL backends included: each
component's sessions carry an application_name of their own (APP_NAMES), and
`cpu_summary` turns what they used into CPU per reservation. `start_profiles` picks
the processes to profile; `errors_logged` and `print_log_tails` read the stack's logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import ROOT
from bench.profiling import (
    PerfProfile,
    PySpyProfile,
    broker_pid,
    children,
    postgres_processes,
    process_tree,
    pyspy_binary,
)

WEB_PORT = int(os.environ.get("BENCH_WEB_PORT", "8001"))
# High enough that the per-user write throttle never refuses: the bench measures the
# API, not the brake. The throttle's Redis round trips still happen, as in production.
WRITE_THROTTLE_RATE = "1000000/s"
# No hold may expire during the run: the handler's commit must be the reservation's last.
HOLD_SECONDS = 86_400
# application_name of each component's PostgreSQL sessions (libpq reads PGAPPNAME;
# the relay names its own connections), so backends are charged to their client.
APP_NAMES = {
    "bench-api-web": "gunicorn",
    "bench-api-relay": "relay",
    "relay_outbox": "relay",
    "bench-api-consumers": "consumers",
}
COMPONENTS = ("gunicorn", "relay", "consumers")


@dataclass
class Stack:
    """gunicorn, the relay and the consumers as `make run` starts them (Procfile).

    Each runs in a session of its own, so a Ctrl-C on the step reaches only the step;
    stop() sends SIGTERM to each and kills what has not exited in time.
    """

    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        base = dict(os.environ)
        # config/gunicorn.py sizes the web's pool (one connection per thread).
        base.pop("DATABASE_POOL_MAX_SIZE", None)
        base["RESERVATION_HOLD_SECONDS"] = str(HOLD_SECONDS)
        # A group of this run's own: the default name is shared with `make run`.
        base["KAFKA_CONSUMER_GROUP"] = f"{os.environ['KAFKA_TOPIC_PREFIX']}consumers"
        metrics_dir = self.logs / "prometheus-web"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "gunicorn",
            # No control socket: its default path is per user, and this one would
            # take it from `make run`'s gunicorn or a test's.
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py"]
            + ["--no-control-socket", "config.wsgi:application"],
            {
                **base,
                "GUNICORN_BIND": f"127.0.0.1:{WEB_PORT}",
                "API_WRITE_THROTTLE_RATE": WRITE_THROTTLE_RATE,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "PGAPPNAME": "bench-api-web",
            },
        )
        self._spawn(
            "relay", _manage("relay_outbox"), {**base, "PGAPPNAME": "bench-api-relay"}
        )
        self._spawn(
            "consumers",
            _manage("run_consumers", "--concurrency", "2"),
            {**base, "PGAPPNAME": "bench-api-consumers"},
        )
        self._wait_ready()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def kill(self) -> None:
        """SIGKILL each process group this stack started (children included)."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def pids(self) -> dict[str, list[int]]:
        """Each component's processes: its main process and every descendant."""
        return {name: process_tree(p.pid) for name, p in self.processes.items()}

    def web_concurrency(self) -> int:
        """gunicorn's workers times threads: requests it serves at once."""
        workers = len(children(self.processes["gunicorn"].pid))
        return workers * int(os.environ.get("GUNICORN_THREADS", "4"))

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}); {self.logs}")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Until /readyz says the database and Kafka answer gunicorn's workers."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                url = f"http://127.0.0.1:{WEB_PORT}/readyz"
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s; {self.logs}")


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def refuse_busy_port() -> None:
    """Refuse to start when something already listens on the bench's port.

    vegeta would otherwise measure that server, and gunicorn would fail to bind.
    """
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex(("127.0.0.1", WEB_PORT)) == 0:
            raise SystemExit(
                f"127.0.0.1:{WEB_PORT} is in use: set BENCH_WEB_PORT to a free port"
            )


def postgres_groups(observer: Any) -> dict[str, list[int]]:
    """PostgreSQL processes by who they work for.

    Client backends of this database are charged to the component named by their
    application_name; the background processes (WAL writer, checkpointer, ...) serve
    every database on the server, including other people's, so they stay apart.
    """
    groups: dict[str, list[int]] = {f"postgres_{c}": [] for c in COMPONENTS}
    groups["postgres_background_shared"] = []
    for pid, app, backend_type, mine in postgres_processes(observer):
        if backend_type == "client backend":
            if mine and app in APP_NAMES:
                groups[f"postgres_{APP_NAMES[app]}"].append(pid)
        elif mine or mine is None:
            groups["postgres_background_shared"].append(pid)
    return groups


def cpu_groups(stack: Stack, observer: Any) -> dict[str, list[int]]:
    """Every process whose CPU the API step reads: the stack's, PostgreSQL's by
    client (postgres_groups) and the broker's (kafka_broker_shared)."""
    broker = broker_pid()
    return {
        **stack.pids(),
        **postgres_groups(observer),
        "kafka_broker_shared": [broker] if broker else [],
    }


def cpu_summary(
    used: dict[str, float],
    *,
    vegeta_s: float,
    window_s: float,
    machine_s: float,
    reservations: int,
) -> dict[str, Any]:
    """CPU µs per handled reservation per component, and cores busy in the window.

    `used` is CPU seconds per group of cpu_groups. `system_total` is the system's own
    (web, PostgreSQL for its clients, relay, consumers), without the load generator and
    the shared services. Cores busy `others` is what the machine spent outside every
    process counted here: other people's work on the same cores (and this step's own
    profilers, if any).
    """
    per = max(reservations, 1)
    postgres = sum(used[f"postgres_{c}"] for c in COMPONENTS)
    mine = {
        "gunicorn": used["gunicorn"],
        "postgres": postgres,
        "relay": used["relay"],
        "consumers": used["consumers"],
        "vegeta": vegeta_s,
    }
    shared = {
        "postgres_background_shared": used["postgres_background_shared"],
        "kafka_broker_shared": used["kafka_broker_shared"],
    }
    ours = sum(mine.values()) + sum(shared.values())
    return {
        "cpu_us_per_reservation": {
            **{k: round(v * 1e6 / per) for k, v in mine.items()},
            "system_total": round((sum(mine.values()) - vegeta_s) * 1e6 / per),
            **{k: round(v * 1e6 / per) for k, v in shared.items()},
        },
        "postgres_us_per_reservation_by_client": {
            c: round(used[f"postgres_{c}"] * 1e6 / per) for c in COMPONENTS
        },
        "cores_busy": {
            **{k: round(v / window_s, 2) for k, v in {**mine, **shared}.items()},
            "machine": round(machine_s / window_s, 2),
            "others": round(max(0.0, machine_s - ours) / window_s, 2),
        },
    }


def errors_logged(logs: Path) -> dict[str, int]:
    """Tracebacks and ERROR lines in each component's log (0 everywhere is expected)."""
    counts = {}
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        counts[log.stem] = text.count("Traceback") + len(re.findall(r"\bERROR\b", text))
    return counts


def print_log_tails(logs: Path) -> None:
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace")[-3000:]
        print(f"--- {log} (tail) ---\n{tail}", file=sys.stderr)


def start_profiles(
    stack: Stack, observer: Any, *, delay: float, duration: float, out: Path
) -> dict[str, PerfProfile | PySpyProfile]:
    """Start profiling the stack for `duration` s after `delay` s, into `out`.

    perf on every busy process (PostgreSQL's backends by client, not the shared
    ones); py-spy, where installed, on two gunicorn workers (one for CPU, one for
    wall time), one consumer and the relay.
    """
    pids = stack.pids()
    profiles: dict[str, PerfProfile | PySpyProfile] = {}
    if shutil.which("perf"):
        backends = postgres_groups(observer)
        groups = {**pids, **{k: v for k, v in backends.items() if "shared" not in k}}
        profiles["perf"] = PerfProfile(
            groups, delay=delay, duration=duration, out=out / "perf.data"
        )
    binary = pyspy_binary()
    workers = pids["gunicorn"][1:]
    chosen = {
        "gunicorn_worker_cpu": (workers[:1], True),
        "gunicorn_worker_wall": (workers[1:2], False),
        "consumer_cpu": (pids["consumers"][1:2], True),
        "relay_cpu": (pids["relay"][:1], True),
    }
    for name, (found, gil) in chosen.items():
        if binary and found:
            profiles[f"py_spy_{name}"] = PySpyProfile(
                binary,
                found[0],
                gil=gil,
                delay=delay,
                duration=duration,
                out=out / f"py-spy-{name}.txt",
            )
    for profile in profiles.values():
        profile.start()
    return profiles
