"""The load of bench.api: vegeta targets, one attack per phase, and the client's figures.

vegeta (bench.tools) sends POST /api/reservations/create/ to loopback only, each
request for a distinct seat as a user drawn from many; `attack` runs one `Phase`
(a constant rate, or a closed loop) and `client_figures` reads vegeta's own results:
requests, status codes, achieved rates and client latencies.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import percentiles
from bench.tools import vegeta
from bench.web_stack import WEB_PORT

RESERVE_PATH = "/api/reservations/create/"
# Targets written for the saturation phase per second of it: more than 2 cores serve.
SATURATION_TARGETS_PER_S = 3000
REQUEST_TIMEOUT_S = 10


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
