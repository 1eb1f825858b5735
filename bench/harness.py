"""What every benchmark step shares: the scale, seeded randomness, percentiles, and
running a step in a process of its own.

Each step runs in a fresh interpreter (`python -m bench.step`), so one step's threads,
pools and producer buffers cannot slow the next, and each step can point Django at the
database it measures (fresh or aged, see bench.databases).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "BENCH-RESULT "
SEED = int(os.environ.get("BENCH_SEED", "20261201"))


def scale() -> float:
    """BENCH_SCALE: 1 is the default run (under 15 minutes); 0.05 is the suite's smoke run."""
    return float(os.environ.get("BENCH_SCALE", "1"))


def scaled(n: int, *, minimum: int = 1) -> int:
    """`n` at the run's scale, never below `minimum`."""
    return max(minimum, int(n * scale()))


def seconds(n: float, *, minimum: float = 2.0) -> float:
    """A duration at the run's scale, never below `minimum` seconds."""
    return max(minimum, n * scale())


def rng(name: str) -> random.Random:
    """A random generator seeded per step, so a run can be repeated exactly."""
    return random.Random(f"{SEED}:{name}")


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of latencies in ms, rounded to 0.01 ms."""
    ordered = sorted(values_ms)
    if not ordered:
        return {
            "p50": math.nan,
            "p95": math.nan,
            "p99": math.nan,
            "max": math.nan,
            "n": 0,
        }

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


def emit(result: dict[str, object]) -> None:
    """What a step prints last: the orchestrator reads the line after RESULT_MARK."""
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_step(
    target: str,
    *,
    database: str = "fresh",
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[str, object]:
    """Run `module:function` (in bench/) as `python -m bench.step` and return its result.

    The step's own output goes to the terminal as it runs; its result is the JSON after
    RESULT_MARK on its last such line. A failing step raises with its exit status.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.step", target, "--database", database],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # A step past its time, and whatever it started that still holds its stdout, is
    # killed as a group: reading its output would otherwise wait forever.
    watchdog = threading.Timer(timeout, _kill_group, [process.pid])
    watchdog.start()
    result: dict[str, object] | None = None
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
            else:
                sys.stdout.write(line)
        status = process.wait()
    except BaseException:
        _kill_group(process.pid)
        raise
    finally:
        watchdog.cancel()
    if status != 0 or result is None:
        raise RuntimeError(f"bench step {target} failed (exit status {status})")
    result.setdefault("step_seconds", round(time.monotonic() - started, 1))
    return result
