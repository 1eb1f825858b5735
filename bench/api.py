"""End to end through the real API under gunicorn: `python -m bench.step api:e2e`.

The stack is the one `make run` starts (gunicorn with config/gunicorn.py, one
`relay_outbox`, `run_consumers --concurrency 2`), as subprocesses of this step, on the
step's database and topics. vegeta (bench.tools) sends POST /api/reservations/create/
at a constant rate, each request for a distinct AVAILABLE seat and a random user of
many, to loopback only. Phases: 100/s, 1,000/s, and saturation (closed loop, a bounded
number of requests in flight).

End-to-end latency is read off the database's clock (bench.dbclock): the API's commit
(the seat's HELD) to the SeatReserved handler's commit (the reservation's RESERVED).
No client polls anything, so the measurement does not load what it measures. Client-side
latencies and status codes come from vegeta's own results.

Where the time goes is read without restarting anything: CPU per reservation of every
process of the run from /proc (PostgreSQL backends split by the client they serve,
through application_name), pg_stat_activity sampled for what the backends wait on, and
at saturation a `perf` profile of the busy processes and, where py-spy is installed,
Python-level profiles of a gunicorn worker, a consumer and the relay.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import connection

from bench import dbclock
from bench.harness import ROOT, percentiles, rng, seconds
from bench.tools import vegeta

WEB_PORT = int(os.environ.get("BENCH_WEB_PORT", "8001"))
RESERVE_PATH = "/api/reservations/create/"
USERS = 5000
# High enough that the per-user write throttle never refuses: the bench measures the
# API, not the brake. The throttle's Redis round trips still happen, as in production.
WRITE_THROTTLE_RATE = "1000000/s"
# No hold may expire during the run: the handler's commit must be the reservation's last.
HOLD_SECONDS = 86_400
# Targets written for the saturation phase per second of it: more than 2 cores serve.
SATURATION_TARGETS_PER_S = 3000
REQUEST_TIMEOUT_S = 10
DRAIN_TIMEOUT_S = 60.0
QUIET_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# application_name of each component's PostgreSQL sessions (libpq reads PGAPPNAME;
# the relay names its own connections), so backends are charged to their client.
APP_NAMES = {
    "bench-api-web": "gunicorn",
    "bench-api-relay": "relay",
    "relay_outbox": "relay",
    "bench-api-consumers": "consumers",
}
COMPONENTS = ("gunicorn", "relay", "consumers")

SPAN_SQL = """
SELECT count(*),
       extract(epoch FROM max(pg_xact_commit_timestamp(r.xmin))
                        - min(pg_xact_commit_timestamp(s.xmin)))
FROM reservations_reservation r
JOIN reservations_seat s ON s.id = r.seat_id
WHERE r.id > %s AND r.status = 'RESERVED'
"""


@dataclass(frozen=True)
class Phase:
    """One attack: `rate` requests/s for `seconds` (rate 0: closed loop).

    `workers` bounds the requests vegeta has in flight; `requests` bounds how many it
    may send (it reads exactly that many targets), so every phase ends by count or by
    time, whichever comes first.
    """

    name: str
    rate: int
    seconds: float
    workers: int

    @property
    def requests(self) -> int:
        per_s = self.rate or SATURATION_TARGETS_PER_S
        return int(per_s * self.seconds)


def phases(web_concurrency: int) -> list[Phase]:
    """The measured phases at the run's scale (BENCH_SCALE), after a warm-up.

    Saturation is closed loop with twice as many requests in flight as gunicorn has
    threads: every thread always has a request waiting, and no more than one, so the
    client p99 is about two requests' service time, not a queue's length over its rate.
    """
    return [
        Phase("warmup", 50, seconds(5), 64),
        Phase("rate_100", 100, seconds(20), 256),
        Phase("rate_1000", 1000, seconds(15), 256),
        Phase("saturation", 0, seconds(15), 2 * web_concurrency),
    ]


# --- data -------------------------------------------------------------------------


def make_data(*, seats: int, users: int) -> tuple[list[int], list[str]]:
    """Create a performance with `seats` AVAILABLE seats and `users` users with tokens.

    Many users, because each request's throttle key and token row are per user, and
    the handler's rows reference the user: a few users would make the bench a queue on
    a few rows. Bulk inserts, so a 60,000-seat hall takes seconds.
    """
    from django.contrib.auth.models import User
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from reservations.models import Concert, Performance, Seat, SeatGrade

    tag = uuid.uuid4().hex[:6]
    concert = Concert.objects.create(title=f"bench api {tag}")
    performance = Performance.objects.create(
        concert=concert,
        venue=f"bench hall {tag}",
        starts_at=timezone.now() + timedelta(days=30),
    )
    Seat.objects.bulk_create(
        [
            Seat(
                performance=performance, number=f"B-{i:06d}", grade=SeatGrade.S, price=1
            )
            for i in range(seats)
        ],
        batch_size=5000,
    )
    names = [f"bench-api-{tag}-{i}" for i in range(users)]
    User.objects.bulk_create(
        [User(username=name, password="!") for name in names], batch_size=5000
    )
    user_ids = User.objects.filter(username__in=names).values_list("pk", flat=True)
    tokens = [Token(key=Token.generate_key(), user_id=pk) for pk in user_ids]
    Token.objects.bulk_create(tokens, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reservations_seat, auth_user, authtoken_token")
    seat_ids = list(
        Seat.objects.filter(performance=performance)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rng("api:seats").shuffle(seat_ids)
    return seat_ids, [t.key for t in tokens]


def write_targets(
    path: Path, *, seat_ids: list[int], tokens: list[str], chooser: random.Random
) -> None:
    """vegeta JSON targets: one POST per seat, each as a user drawn from `chooser`."""
    url = f"http://127.0.0.1:{WEB_PORT}{RESERVE_PATH}"
    with path.open("w") as out:
        for seat_id in seat_ids:
            body = json.dumps({"seat_id": seat_id}).encode()
            target = {
                "method": "POST",
                "url": url,
                "body": base64.b64encode(body).decode(),
                "header": {
                    "Authorization": [f"Token {chooser.choice(tokens)}"],
                    "Content-Type": ["application/json"],
                },
            }
            out.write(json.dumps(target) + "\n")


# --- the stack --------------------------------------------------------------------


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
        return {name: _tree(p.pid) for name, p in self.processes.items()}

    def web_concurrency(self) -> int:
        """gunicorn's workers times threads: requests it serves at once."""
        workers = len(_children(self.processes["gunicorn"].pid))
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


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in _children(pid):
        pids += _tree(child)
    return pids


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


# --- CPU accounting ---------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, every thread, in seconds (0 if it has gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot: user, nice, system, irq, softirq
    (not idle, iowait, or steal, which is the hypervisor's)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


def _postgres_groups(observer: Any) -> dict[str, list[int]]:
    """PostgreSQL processes by who they work for.

    Client backends of this database are charged to the component named by their
    application_name; the background processes (WAL writer, checkpointer, ...) serve
    every database on the server, including other people's, so they stay apart.
    """
    rows = observer.execute(
        "SELECT pid, application_name, backend_type, datname = current_database() "
        "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    ).fetchall()
    groups: dict[str, list[int]] = {f"postgres_{c}": [] for c in COMPONENTS}
    groups["postgres_background_shared"] = []
    for pid, app, backend_type, mine in rows:
        if backend_type == "client backend":
            if mine and app in APP_NAMES:
                groups[f"postgres_{APP_NAMES[app]}"].append(pid)
        elif mine or mine is None:
            groups["postgres_background_shared"].append(pid)
    return groups


def _kafka_pid() -> int | None:
    try:
        return int((ROOT / ".local" / "kafka" / "kafka.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@dataclass
class CpuSnapshot:
    """CPU seconds per pid per component, and the machine's busy seconds, at `at`."""

    at: float
    per_pid: dict[str, dict[int, float]]
    machine: float

    @classmethod
    def take(cls, stack: Stack, observer: Any) -> CpuSnapshot:
        groups = {**stack.pids(), **_postgres_groups(observer)}
        kafka = _kafka_pid()
        groups["kafka_broker_shared"] = [kafka] if kafka else []
        per_pid = {
            name: {p: _cpu_seconds(p) for p in pids} for name, pids in groups.items()
        }
        return cls(time.monotonic(), per_pid, _machine_busy_seconds())


def cpu_used(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each component used between two snapshots.

    A process that appeared in between (a new backend) counts from zero; one that
    ended in between is lost, which the run avoids (pools keep their connections).
    """
    used: dict[str, float] = {}
    for name, pids in end.per_pid.items():
        before = start.per_pid.get(name, {})
        used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
    return used


def process_cores(start: CpuSnapshot, end: CpuSnapshot, component: str) -> list[float]:
    """Cores each process of `component` used between two snapshots, busiest first.

    For gunicorn this shows how evenly the workers share the load: a worker keeps the
    keep-alive connections it accepted, so a client with few connections can leave
    some workers idle.
    """
    window = end.at - start.at
    before = start.per_pid.get(component, {})
    used = [cpu - before.get(p, 0.0) for p, cpu in end.per_pid[component].items()]
    return sorted((round(u / window, 2) for u in used), reverse=True)


def cpu_summary(
    used: dict[str, float],
    *,
    vegeta_s: float,
    window_s: float,
    machine_s: float,
    reservations: int,
) -> dict[str, Any]:
    """CPU µs per handled reservation per component, and cores busy in the window.

    `system_total` is the system's own (web, PostgreSQL for its clients, relay,
    consumers), without the load generator and the shared services. Cores busy
    `others` is what the machine spent outside every process counted here: other
    people's work on the same cores (and this step's own profilers, if any).
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


# --- what the backends do ---------------------------------------------------------


class ActivitySampler(threading.Thread):
    """Samples pg_stat_activity every `interval` s: what each component's backends do.

    The summary is the mean number of backends per state: active on CPU (or waiting
    for one: PostgreSQL cannot tell), active and waiting on a named event (a lock, the
    WAL), idle in a transaction (the client is working between its statements), idle.
    """

    def __init__(self, dsn: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.counts: Counter[tuple[str, str]] = Counter()
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._done.is_set():
                rows = conn.execute(
                    "SELECT application_name, state, wait_event_type, wait_event "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchall()
                for app, state, wait_type, wait in rows:
                    if app in APP_NAMES:
                        self.counts[
                            (APP_NAMES[app], _state(state, wait_type, wait))
                        ] += 1
                self.samples += 1
                self._done.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self.join(timeout=10)
        n = max(self.samples, 1)
        summary: dict[str, Any] = {"samples": self.samples}
        for (component, state), count in sorted(self.counts.items()):
            summary.setdefault(component, {})[state] = round(count / n, 2)
        return summary


def _state(state: str | None, wait_type: str | None, wait: str | None) -> str:
    if state == "active":
        return f"active_wait_{wait_type}:{wait}" if wait_type else "active_on_cpu"
    return (state or "unknown").replace(" ", "_")


# --- perf ------------------------------------------------------------------------


PERF_LINE = re.compile(r"\s*([\d.]+)%\s+(\d+):\S+\s+(\S+)\s+\[(.)\]\s+(.*\S)")


class PerfProfile(threading.Thread):
    """`perf record` of the given processes for `duration` s, starting after `delay`.

    Flat profiles (no call graphs): which shared object and which functions the
    CPU time goes to, per component. Python 3.11 has no perf map, so Python code shows
    as the interpreter; the split between interpreter, kernel (sockets, syscalls),
    libpq and PostgreSQL's own functions is what it tells.

    Samples are charged by thread: `perf report --pid` with a sort key that omits the
    thread merges every process's entries before it filters, so each component's
    threads are listed when the recording starts and the report is split here.
    """

    def __init__(
        self, groups: dict[str, list[int]], *, delay: float, duration: float, out: Path
    ) -> None:
        super().__init__(daemon=True)
        self.groups = {k: v for k, v in groups.items() if v}
        self.delay, self.duration, self.out = delay, duration, out
        self.threads: dict[int, str] = {}
        self.error: str | None = None

    def run(self) -> None:
        time.sleep(self.delay)
        for name, pids in self.groups.items():
            for pid in pids:
                self.threads.update((tid, name) for tid in _threads(pid))
        pids = ",".join(str(p) for pids in self.groups.values() for p in pids)
        argv = ["perf", "record", "-F", "499", "-o", str(self.out), "-p", pids]
        argv += ["--", "sleep", f"{self.duration:.1f}"]
        run = subprocess.run(
            argv, capture_output=True, text=True, timeout=self.duration + 60
        )
        if run.returncode != 0:
            self.error = run.stderr.strip()[-500:]

    def summary(self) -> dict[str, Any]:
        self.join(timeout=self.delay + self.duration + 90)
        if self.error or not self.out.exists():
            return {"error": self.error or "perf wrote nothing"}
        argv = ["perf", "report", "-i", str(self.out), "--stdio", "--no-children"]
        argv += ["-q", "--sort", "pid,dso,sym"]
        report = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        objects: dict[str, Counter[str]] = {name: Counter() for name in self.groups}
        functions: dict[str, Counter[str]] = {name: Counter() for name in self.groups}
        for line in report.stdout.splitlines():
            match = PERF_LINE.match(line)
            if match and int(match[2]) in self.threads:
                name = self.threads[int(match[2])]
                objects[name][match[3]] += float(match[1])
                functions[name][f"{match[3]} {match[5]}"] += float(match[1])
        result: dict[str, Any] = {"seconds": self.duration, "frequency_hz": 499}
        for name in self.groups:
            result[name] = {
                "by_object_pct": _shares(objects[name], 6),
                "top_functions_pct": _shares(functions[name], 12),
            }
        return result


def _threads(pid: int) -> list[int]:
    return [int(t.name) for t in Path(f"/proc/{pid}/task").glob("*")]


def _shares(counter: Counter[str], top: int) -> list[list[Any]]:
    total = sum(counter.values()) or 1.0
    return [[round(100 * v / total, 1), k] for k, v in counter.most_common(top)]


class PySpyProfile(threading.Thread):
    """py-spy samples of one process for `duration` s, starting after `delay`.

    Used only where py-spy is installed (it is not a requirement): Python-level stacks
    of what a gunicorn worker or a consumer spends its time on, which perf cannot
    show under Python 3.11. With `gil`, only the thread holding the GIL is sampled, so
    a thread waiting on PostgreSQL, Redis or a socket is not counted: the process's
    Python CPU. Without it, every thread py-spy does not find idle: where a request's
    wall time goes, round trips included. Non-blocking: the process is never paused.
    """

    def __init__(
        self,
        binary: str,
        pid: int,
        *,
        gil: bool,
        delay: float,
        duration: float,
        out: Path,
    ) -> None:
        super().__init__(daemon=True)
        self.binary, self.pid, self.gil, self.out = binary, pid, gil, out
        self.delay, self.duration = delay, duration
        self.error: str | None = None

    def run(self) -> None:
        time.sleep(self.delay)
        argv = [self.binary, "record", "--pid", str(self.pid), "--nonblocking"]
        argv += ["--rate", "200", *(["--gil"] if self.gil else [])]
        argv += ["--duration", str(max(1, round(self.duration)))]
        argv += ["--format", "raw", "--output", str(self.out)]
        run = subprocess.run(
            argv, capture_output=True, text=True, timeout=self.duration + 60
        )
        if run.returncode != 0:
            self.error = (run.stderr or run.stdout).strip()[-500:]

    def summary(self) -> dict[str, Any]:
        self.join(timeout=self.delay + self.duration + 90)
        if self.error or not self.out.exists():
            return {"error": self.error or "py-spy wrote nothing"}
        return collapsed_summary(self.out.read_text())


def collapsed_summary(text: str, *, top: int = 25) -> dict[str, Any]:
    """Share of samples per function: where it ran (self) and under it (inclusive).

    Frames are `function (file:line)`; lines are dropped so that one function is one
    entry, and a function that recurses counts once per sample. Inclusive shares
    leave out the frames nearly every sample passes through (thread start, gunicorn's
    handler, Django's middleware chain), which say nothing about where the time goes.
    """
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            under[frame] += int(count)

    def share(counter: Counter[str], below: float) -> list[list[Any]]:
        ranked = [(n, f) for f, n in counter.most_common() if n < below * total]
        return [[round(100 * n / total, 1), f] for n, f in ranked[:top]]

    return {
        "samples": total,
        "self_pct": share(own, below=1.01),
        "inclusive_pct": share(under, below=0.9),
    }


def _frame(frame: str) -> str:
    """`f (/path/to/site-packages/pkg/mod.py:12)` -> `f (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = re.sub(r":\d+\)$", "", where).rstrip(")")
    where = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", where)
    return f"{name} ({where.replace(str(ROOT) + '/', '')})"


def _pyspy() -> str | None:
    venv = ROOT / ".venv" / "bin" / "py-spy"
    return shutil.which("py-spy") or (str(venv) if venv.exists() else None)


# --- one phase ----------------------------------------------------------------------


def attack(phase: Phase, targets: Path, results: Path) -> float:
    """Run vegeta for `phase`; return its CPU seconds (it is a child of this process).

    Bounded in time (-duration, plus -timeout for the last answers) and in count
    (-lazy reads the targets as it sends, and stops when they run out).
    """
    rate = f"{phase.rate}/1s" if phase.rate else "0"
    argv = [str(vegeta()), "attack", "-format=json", "-lazy", f"-targets={targets}"]
    argv += [f"-rate={rate}", f"-duration={phase.seconds:.3f}s"]
    argv += [f"-timeout={REQUEST_TIMEOUT_S}s", f"-max-workers={phase.workers}"]
    argv += [f"-output={results}", "-max-body=300"]
    if not phase.rate:
        argv.append(f"-workers={phase.workers}")
    with (results.parent / "vegeta.log").open("ab") as log:
        process = subprocess.Popen(argv, stderr=log)
    # Its own rusage, from wait4: the children's total would also hold the profilers'.
    limit = threading.Timer(phase.seconds + REQUEST_TIMEOUT_S + 60, process.kill)
    limit.start()
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        limit.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"vegeta exited {process.returncode}; see {log.name}")
    return usage.ru_utime + usage.ru_stime


def client_figures(results: Path) -> dict[str, Any]:
    """Requests, status codes, achieved rates and client latencies from vegeta's results.

    vegeta's status 0 is a transport error (refused, reset, timed out).
    """
    encoded = subprocess.run(
        [str(vegeta()), "encode", "--to=csv", str(results)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    codes: Counter[str] = Counter()
    samples: Counter[str] = Counter()
    latencies: list[float] = []
    first, last, end = float("inf"), 0.0, 0.0
    for row in csv.reader(encoded.splitlines()):
        sent, code, latency = int(row[0]) / 1e9, row[1], int(row[2]) / 1e9
        codes[code] += 1
        latencies.append(latency * 1000)
        first, last, end = min(first, sent), max(last, sent), max(end, sent + latency)
        if code != "201":
            body = base64.b64decode(row[6]).decode(errors="replace")
            samples[f"{code} {row[5] or body}"[:200]] += 1
    n = len(latencies)
    sending, span = max(last - first, 1e-9), max(end - first, 1e-9)
    client = percentiles(latencies)
    return {
        "requests": n,
        "achieved_rate": round(n / sending, 1) if n > 1 else 0,
        "created_per_s": round(codes["201"] / span, 1) if n else 0,
        "status_codes": dict(codes),
        "non_201": dict(samples.most_common(5)),
        "client_latency_ms": {k: client[k] for k in ("p50", "p95", "p99", "max")},
    }


def drain(after_id: int, timeout: float = DRAIN_TIMEOUT_S) -> tuple[int, float]:
    """Wait (bounded) until every reservation after `after_id` was handled.

    Also until no new reservation has appeared for QUIET_S: a request the client gave
    up on (a timeout) may still be queued in gunicorn and commit later, and it must
    not land in the next phase's figures. Return what is still PENDING and how long
    the wait took.
    """
    started = time.monotonic()
    last, quiet_since = dbclock.last_reservation_id(), started
    while True:
        time.sleep(0.2)
        now = time.monotonic()
        newest = dbclock.last_reservation_id()
        if newest != last:
            last, quiet_since = newest, now
        pending = dbclock.pending_reservations(after_id)
        if (pending == 0 and now - quiet_since >= QUIET_S) or now - started > timeout:
            return pending, round(now - started, 2)


def pipeline_span(after_id: int) -> tuple[int, float]:
    """Reservations handled after `after_id`, and seconds from first API commit to last
    handler commit (both off the database's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(SPAN_SQL, [after_id])
        count, span = cursor.fetchone()
    return int(count), float(span or 0.0)


@dataclass
class Run:
    """Everything a phase needs: the stack, a directory, the observers, the data."""

    stack: Stack
    work: Path
    observer: Any
    dsn: str
    seat_ids: list[int]
    tokens: list[str]
    chooser: random.Random = field(default_factory=lambda: rng("api:users"))
    next_seat: int = 0

    def seats(self, n: int) -> list[int]:
        taken = self.seat_ids[self.next_seat : self.next_seat + n]
        self.next_seat += n
        return taken


def run_phase(run: Run, phase: Phase) -> dict[str, Any]:
    """Attack, wait for the pipeline to drain, read latencies and CPU per reservation."""
    targets = run.work / f"{phase.name}.targets.jsonl"
    results = run.work / f"{phase.name}.results.bin"
    write_targets(
        targets,
        seat_ids=run.seats(phase.requests),
        tokens=run.tokens,
        chooser=run.chooser,
    )
    after_id = dbclock.last_reservation_id()
    sampler = ActivitySampler(run.dsn)
    profiles = _profiles(run, phase)
    start = CpuSnapshot.take(run.stack, run.observer)
    sampler.start()
    vegeta_s = attack(phase, targets, results)
    activity = sampler.stop()
    pending, waited = drain(after_id)
    end = CpuSnapshot.take(run.stack, run.observer)
    run.stack.check_alive()
    handled, span = pipeline_span(after_id)
    e2e = percentiles(dbclock.reservation_latencies_ms(after_id))
    window = end.at - start.at
    result: dict[str, Any] = {
        "target_rate": phase.rate or "closed loop",
        "max_in_flight": phase.workers,
        "seconds": round(phase.seconds, 2),
        "targets": phase.requests,
        **client_figures(results),
        "handled": handled,
        "pending_after_wait": pending,
        "drain_wait_s": waited,
        "events_per_s": round(handled / span, 1) if span else 0,
        "e2e_ms": e2e,
        "window_s": round(window, 2),
        **cpu_summary(
            cpu_used(start, end),
            vegeta_s=vegeta_s,
            window_s=window,
            machine_s=end.machine - start.machine,
            reservations=handled,
        ),
        "gunicorn_process_cores": process_cores(start, end, "gunicorn"),
        "pg_activity_mean_backends": activity,
    }
    for name, profile in profiles.items():
        result[name] = profile.summary()
    return result


def _profiles(run: Run, phase: Phase) -> dict[str, PerfProfile | PySpyProfile]:
    """Profiles over the middle of the saturation attack (BENCH_API_PERF=0: none).

    perf on every busy process; py-spy, where installed, on two gunicorn workers (one
    for CPU, one for wall time), one consumer and the relay.
    """
    if phase.rate or os.environ.get("BENCH_API_PERF", "1") == "0":
        return {}
    delay, duration = phase.seconds / 3, max(1.0, min(5.0, phase.seconds / 3))
    pids = run.stack.pids()
    profiles: dict[str, PerfProfile | PySpyProfile] = {}
    if shutil.which("perf"):
        backends = _postgres_groups(run.observer)
        groups = {**pids, **{k: v for k, v in backends.items() if "shared" not in k}}
        profiles["perf"] = PerfProfile(
            groups, delay=delay, duration=duration, out=run.work / "perf.data"
        )
    binary = _pyspy()
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
                out=run.work / f"py-spy-{name}.txt",
            )
    for profile in profiles.values():
        profile.start()
    return profiles


# --- the step -----------------------------------------------------------------------


def e2e() -> dict[str, Any]:
    """Commit → handler-committed latency at 100/s, 1,000/s and saturation; API reserve
    throughput and p99 at saturation; where the CPU goes (see the module docstring)."""
    import psycopg

    from bench.setup import delete_topics
    from events.topics import create_topics

    dbclock.require_commit_timestamps()
    refuse_busy_port()
    vegeta()
    create_topics()
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    dsn = os.environ["DATABASE_URL"]
    stack = Stack(logs=work)
    try:
        stack.start()
        web_concurrency = stack.web_concurrency()
        plan = phases(web_concurrency)
        seat_ids, tokens = make_data(seats=sum(p.requests for p in plan), users=USERS)
        with psycopg.connect(dsn, autocommit=True) as observer:
            run = Run(stack, work, observer, dsn, seat_ids, tokens)
            measured = {p.name: run_phase(run, p) for p in plan}
        stack.stop()
    except BaseException:
        stack.kill()
        _print_log_tails(work)
        raise
    finally:
        delete_topics(os.environ["KAFKA_TOPIC_PREFIX"])
    result = _result(measured, plan, work, web_concurrency)
    if os.environ.get("BENCH_API_KEEP") != "1":
        _remove_bulky(work)
    return result


def _result(
    measured: dict[str, dict[str, Any]],
    plan: list[Phase],
    work: Path,
    web_concurrency: int,
) -> dict[str, Any]:
    saturation = measured["saturation"]
    e2e_ms: dict[str, Any] = {
        name: measured[name]["e2e_ms"] for name in ("rate_100", "rate_1000")
    }
    e2e_ms["saturation"] = {
        **saturation["e2e_ms"],
        "events_per_s": saturation["events_per_s"],
    }
    return {
        "e2e_latency_ms": e2e_ms,
        "api_reserve_rps": saturation["created_per_s"],
        "api_reserve_p99_ms": saturation["client_latency_ms"]["p99"],
        "api": {
            "phases": measured,
            "bounds": _bounds(saturation),
            "server_errors_logged": _errors_logged(work),
            "logs": str(work),
            "settings": _settings(plan, web_concurrency),
        },
    }


def _bounds(saturation: dict[str, Any]) -> dict[str, Any]:
    """The saturation figures the report cites for what bounds throughput."""
    return {
        "cpu_us_per_reservation": saturation["cpu_us_per_reservation"],
        "postgres_us_per_reservation_by_client": saturation[
            "postgres_us_per_reservation_by_client"
        ],
        "cores_busy": saturation["cores_busy"],
        "gunicorn_process_cores": saturation["gunicorn_process_cores"],
        "pg_activity_mean_backends": saturation["pg_activity_mean_backends"],
        **{
            k: v for k, v in saturation.items() if k == "perf" or k.startswith("py_spy")
        },
    }


def _errors_logged(work: Path) -> dict[str, int]:
    """Tracebacks and ERROR lines in each component's log (0 everywhere is expected)."""
    counts = {}
    for log in sorted(work.glob("*.log")):
        text = log.read_text(errors="replace")
        counts[log.stem] = text.count("Traceback") + len(re.findall(r"\bERROR\b", text))
    return counts


def _settings(plan: list[Phase], web_concurrency: int) -> dict[str, Any]:
    return {
        "endpoint": f"POST {RESERVE_PATH} (no Idempotency-Key), loopback only",
        "load_generator": "vegeta v12.13.0, constant rate (saturation: closed loop)",
        "phases": {p.name: [p.rate or "max", p.seconds, p.workers] for p in plan},
        "phase_columns": ["rate/s", "seconds", "max in flight"],
        "gunicorn": "config/gunicorn.py defaults (2 workers/core, at most 8; "
        f"{os.environ.get('GUNICORN_THREADS', '4')} threads; pool one per thread), "
        "--no-control-socket",
        "gunicorn_threads_total": web_concurrency,
        "relay": "manage.py relay_outbox (defaults, one process, no metrics port)",
        "consumers": "manage.py run_consumers --concurrency 2 (no metrics port, "
        "a consumer group of the run's own)",
        "settings_module": f"{os.environ.get('DJANGO_SETTINGS_MODULE')} (prod "
        "redirects plain HTTP to HTTPS)",
        "API_WRITE_THROTTLE_RATE": f"{WRITE_THROTTLE_RATE} (the default 120/min per "
        "user would refuse; the throttle still runs)",
        "RESERVATION_HOLD_SECONDS": HOLD_SECONDS,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL"),
        "EVENTS_AUDIT_LOG_LEVEL": os.environ.get("EVENTS_AUDIT_LOG_LEVEL"),
        "users": USERS,
        "not_running": "Celery worker and beat (nothing else touches the rows)",
        "e2e_clock": "pg_xact_commit_timestamp(reservation.xmin) - "
        "pg_xact_commit_timestamp(seat.xmin)",
        "cpu": "/proc utime+stime per process over attack + drain, per handled "
        "reservation; PostgreSQL backends by application_name; *_shared also serve "
        "other users of this machine; system_total leaves out vegeta and *_shared",
    }


def _remove_bulky(work: Path) -> None:
    """Keep the logs of a run that worked; its targets, results and profile go."""
    for pattern in ("*.targets.jsonl", "*.results.bin", "perf.data*", "py-spy-*"):
        for path in work.glob(pattern):
            path.unlink()


def _print_log_tails(work: Path) -> None:
    for log in sorted(work.glob("*.log")):
        tail = log.read_text(errors="replace")[-3000:]
        print(f"--- {log} (tail) ---\n{tail}", file=sys.stderr)
