"""Container health check of a process that serves Prometheus metrics.

    python -m config.healthcheck --port 9101 --metric outbox_relay_last_loop_timestamp_seconds
    python -m config.healthcheck --port 9102 --count 2 \
        --metric consumer_last_loop_timestamp_seconds

Exit 0 if every port (port, port+1, ... port+count-1; run_consumers child n serves on
port + n) answers and its heartbeat gauge is younger than --max-age seconds, else 1.
Needs neither Django nor a database, so it stays cheap enough to run every few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request


def heartbeat(url: str, metric: str, timeout: float = 3.0) -> float | None:
    """The value of `metric` (unlabelled) on the metrics page at `url`, or None."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        for line in response.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name == metric:
                return float(value)
    return None


def check(
    *, host: str, port: int, count: int, metric: str, max_age: float
) -> list[str]:
    """Return the problems found (empty: healthy)."""
    problems = []
    now = time.time()
    for p in range(port, port + count):
        url = f"http://{host}:{p}/metrics"
        try:
            beat = heartbeat(url, metric)
        except OSError as exc:
            problems.append(f"{url}: {exc}")
            continue
        if beat is None or beat <= 0:
            problems.append(f"{url}: no {metric} yet")
        elif now - beat > max_age:
            problems.append(f"{url}: last loop {now - beat:.0f} s ago")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--max-age", type=float, default=60.0)
    args = parser.parse_args(argv)
    problems = check(
        host=args.host,
        port=args.port,
        count=args.count,
        metric=args.metric,
        max_age=args.max_age,
    )
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
