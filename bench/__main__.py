"""`make bench`: every benchmark in one run, against Kafka's own tools on the same broker.

    python -m bench                 # the whole run: results/latest.json and REPORT.md
    python -m bench --only anchors,relay_fresh --out /tmp/x.json --no-report
    python -m bench --skip cdc      # everything but the CDC steps (no Kafka Connect)

Each step runs in a process of its own (bench.step) on the database it names: `fresh`
(made anew at the start of the run) or `aged` (kept between runs, brought to steady
state by the `aging` step before anything is measured on it). BENCH_SCALE scales every
count and duration (1 by default; the suite's smoke run uses 0.05).

The CDC steps (`cdc`, `pipeline_cdc`) need a Kafka Connect worker at CDC_CONNECT_URL
(`make bench` starts one: infra/connect/connect.sh start) and run with
OUTBOX_RELAY=cdc; `--skip cdc` leaves them out (the suite's short run does).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import ROOT, run_step, scale

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Step:
    name: str
    target: str
    database: str
    # Copies figures from the step's result into the run's top-level keys.
    keys: Callable[[dict], dict] = field(default=lambda r: r)
    # Environment of the step's process on top of the run's.
    env: dict[str, str] = field(default_factory=dict)
    # Needs Kafka Connect (skipped by `--skip cdc`).
    cdc: bool = False


CDC_ENV = {"OUTBOX_RELAY": "cdc"}


def _relay(suffix: str) -> Callable[[dict], dict]:
    return lambda r: {
        f"relay_drain_events_per_s{suffix}": r["relay_drain"]["events_per_second"],
        f"relay_drain{suffix}": r["relay_drain"],
    }


def _consumer_fresh(r: dict) -> dict:
    return {
        "consumer_events_per_s_fresh": r["consumer"]["one_process"],
        "consumer_fresh": r["consumer"],
    }


def _consumer_aged(r: dict) -> dict:
    return {
        "consumer_events_per_s": r["consumer"]["one_process"],
        "consumer_events_per_s_concurrency_2": r["consumer"]["concurrency_2"],
        "consumer": r["consumer"],
    }


PLAN = [
    Step("anchors", "anchors:run", "fresh"),
    Step("relay_fresh", "throughput:relay", "fresh", _relay("_fresh")),
    Step("consumer_fresh", "throughput:consumer", "fresh", _consumer_fresh),
    Step("aging", "aging:run", "aged"),
    Step("relay", "throughput:relay", "aged", _relay("")),
    Step("consumer", "throughput:consumer", "aged", _consumer_aged),
    Step("api", "api:e2e", "aged"),
    Step("pipeline", "pipeline:e2e", "aged"),
    Step("rebalance", "consumer:rebalance", "aged"),
    Step("scaling", "scaling:run", "fresh"),
    Step("retry", "retry:run", "fresh"),
    Step("before_design", "before_design:run", "fresh"),
    Step("naive_relay", "naive_relay:run", "fresh"),
    Step("sharded_relay", "sharded_relay:run", "fresh"),
    Step("crash", "crash:run", "fresh"),
    # Polling vs CDC in the same run: drain, recovery after kill -9, memory (fresh),
    # then the latency phases on the aged database, as `pipeline` measures polling.
    Step("cdc", "cdc:run", "fresh", env=CDC_ENV, cdc=True),
    Step("pipeline_cdc", "pipeline:e2e_cdc", "aged", env=CDC_ENV, cdc=True),
]


def merge(into: dict, new: dict) -> None:
    """Merge `new` into `into`; dicts under the same key merge too (before_design)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated step names (default: all)")
    parser.add_argument(
        "--skip",
        help="comma-separated step names to leave out; `cdc` leaves out every step "
        "that needs Kafka Connect",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=ROOT / "bench",
        help="where REPORT.md and results/*.png go (default: bench/)",
    )
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {s.name for s in PLAN}
    skipped = set(args.skip.split(",")) if args.skip else set()
    if "cdc" in skipped:
        skipped |= {s.name for s in PLAN if s.cdc}
    unknown = (wanted | skipped) - {s.name for s in PLAN}
    wanted -= skipped
    if unknown:
        parser.error(
            f"unknown steps {sorted(unknown)}; known: {[s.name for s in PLAN]}"
        )
    from bench import databases
    from bench.setup import machine

    started = time.monotonic()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": scale(),
        "machine": machine(),
        "steps": {},
    }
    databases.create("fresh", drop=True)
    # Kept between runs (aging it is the slow part); migrated to the current schema.
    databases.create("aged", drop=bool(os.environ.get("BENCH_AGE_AGAIN")))
    for step in PLAN:
        if step.name not in wanted:
            continue
        print(f"bench: {step.name} ({step.target} on the {step.database} database)")
        result = run_step(step.target, database=step.database, env=step.env)
        results["steps"][step.name] = result.pop("step_seconds")
        merge(results, step.keys(result))
    from bench.report import derive

    merge(results, derive(results))
    results["duration_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"bench: results in {args.out} after {results['duration_s']:.0f} s")
    if not args.no_report:
        from bench.report import write_report

        print(f"bench: report in {write_report(results, args.report_dir)}")


if __name__ == "__main__":
    main()
