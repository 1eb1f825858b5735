"""Where a step's CPU goes, read without restarting anything.

- /proc accounting: CPU seconds per process (optionally with the times of the children
  it has reaped), process trees, the machine's busy time, the local broker's and
  PostgreSQL's processes, and `CpuSnapshot`, per-process CPU per named group at one
  moment, with what two snapshots say about the time between them.
- `ActivitySampler`: what PostgreSQL's backends do (pg_stat_activity), per client.
- `PerfProfile` and `PySpyProfile`: `perf record` of a set of processes, py-spy of one,
  summarised per component (`collapsed_summary` for py-spy's collapsed stacks).

bench.api charges each process of its stack and each PostgreSQL backend to a
component; bench.scaling charges the consumers' process tree, PostgreSQL and the
broker. Both read the figures through this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")

PG_PROCESSES_SQL = (
    "SELECT pid, application_name, backend_type, datname = current_database() "
    "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
)


# --- /proc -------------------------------------------------------------------------


def process_cpu(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of `pid`, every thread, in seconds (0 if it has gone).

    With `reaped_children`, also the times of the children it has waited for: a
    backend or a consumer that exits inside a window hands its time to its parent's
    cutime/cstime.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing bracket.
    fields = stat.rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / CLK_TCK


def children(pid: int) -> list[int]:
    """The direct children of `pid` (of each of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant, parents before their children."""
    pids = [pid]
    for child in children(pid):
        pids += process_tree(child)
    return pids


def threads(pid: int) -> list[int]:
    return [int(t.name) for t in Path(f"/proc/{pid}/task").glob("*")]


def pids_named(name: str) -> list[int]:
    """Processes whose command name (/proc/<pid>/comm) is `name`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def broker_pid() -> int | None:
    """The local Kafka broker's JVM, if it runs on this machine."""
    for pid in pids_named("java"):
        try:
            if b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except (FileNotFoundError, ProcessLookupError):
            continue
    return None


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot: user, nice, system, irq, softirq
    (not idle, iowait, or steal, which is the hypervisor's; guest is inside user)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


def postgres_processes(conn: Any) -> list[tuple[int, str, str, bool | None]]:
    """Every PostgreSQL process but the caller's own backend: (pid, application_name,
    backend_type, whether it serves the connection's database; None for background
    processes of no database). `conn`: a psycopg or a Django connection."""
    with conn.cursor() as cursor:
        cursor.execute(PG_PROCESSES_SQL)
        return [tuple(row) for row in cursor.fetchall()]


@dataclass
class CpuSnapshot:
    """CPU seconds per pid per named group, and the machine's busy seconds, at `at`."""

    at: float
    per_pid: dict[str, dict[int, float]]
    machine: float

    @classmethod
    def take(
        cls, groups: Mapping[str, list[int]], *, reaped_children: bool = False
    ) -> CpuSnapshot:
        per_pid = {
            name: {p: process_cpu(p, reaped_children=reaped_children) for p in pids}
            for name, pids in groups.items()
        }
        return cls(time.monotonic(), per_pid, machine_busy_seconds())

    def total(self, group: str) -> float:
        return sum(self.per_pid.get(group, {}).values())


def cpu_used(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots, process by process.

    A process that appeared in between (a new backend) counts from zero; one that
    ended in between is lost, which the API run avoids (pools keep their connections).
    """
    used: dict[str, float] = {}
    for name, pids in end.per_pid.items():
        before = start.per_pid.get(name, {})
        used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
    return used


def process_cores(start: CpuSnapshot, end: CpuSnapshot, group: str) -> list[float]:
    """Cores each process of `group` used between two snapshots, busiest first."""
    window = end.at - start.at
    before = start.per_pid.get(group, {})
    used = [cpu - before.get(p, 0.0) for p, cpu in end.per_pid[group].items()]
    return sorted((round(u / window, 2) for u in used), reverse=True)


# --- what the backends do ----------------------------------------------------------


class ActivitySampler(threading.Thread):
    """Samples pg_stat_activity every `interval` s: what each component's backends do.

    Backends are charged to a component by their application_name (`app_names`).
    The summary is the mean number of backends per state: active on CPU (or waiting
    for one: PostgreSQL cannot tell), active and waiting on a named event (a lock, the
    WAL), idle in a transaction (the client is working between its statements), idle.
    """

    def __init__(
        self, dsn: str, app_names: Mapping[str, str], interval: float = 0.05
    ) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.app_names = app_names
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
                    if app in self.app_names:
                        component = self.app_names[app]
                        self.counts[(component, _state(state, wait_type, wait))] += 1
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
                self.threads.update((tid, name) for tid in threads(pid))
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


def _shares(counter: Counter[str], top: int) -> list[list[Any]]:
    total = sum(counter.values()) or 1.0
    return [[round(100 * v / total, 1), k] for k, v in counter.most_common(top)]


# --- py-spy ----------------------------------------------------------------------


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


def pyspy_binary() -> str | None:
    """py-spy on PATH or in the project's virtualenv, if installed."""
    venv = ROOT / ".venv" / "bin" / "py-spy"
    return shutil.which("py-spy") or (str(venv) if venv.exists() else None)


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
