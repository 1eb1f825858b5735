"""The benchmark's CDC steps (polling relay vs Debezium, bench/cdc.py and bench/pipeline.py
in cdc mode) at a small scale, with Kafka Connect up (`make test-cdc`).

The main suite's short run (tests/test_bench.py) skips them (`--skip cdc`): it runs
without Connect. Here only outcomes are checked: every figure is there and positive,
nothing was lost in either relay's crash, the cdc-mode writer matches cdc-mode
publish. No timing is asserted: speed is the report's business.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.cdc


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


@pytest.fixture(scope="module")
def cdc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_cdc")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE"))
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("OUTBOX_RELAY", None)
    env.update(
        BENCH_SCALE="0.05",
        BENCH_FRESH_DATABASE="reservations_bench_cdc_suite",
        BENCH_AGED_DATABASE="reservations_bench_cdc_suite_aged",
        # The worker the recovery measurement kills: its own, not `make bench`'s.
        BENCH_CONNECT_REST_PORT="8095",
    )
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "cdc,pipeline_cdc"]
        + ["--out", str(out / "latest.json"), "--report-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    return json.loads((out / "latest.json").read_text()), out


@pytest.mark.timeout(900)
def test_the_cdc_steps_report_every_figure(cdc_run) -> None:
    result, _ = cdc_run
    assert _positive(result["cdc_drain_events_per_s"])
    assert _positive(result["cdc"]["polling"]["drain"]["events_per_second"])
    for phase in ("rate_100", "rate_1000"):
        for q in ("p50", "p99"):
            assert _positive(result["cdc_e2e_latency_ms"][phase][q]), (phase, q)
    polling = result["cdc"]["polling"]
    cdc = result["cdc"]["cdc"]
    for run in (polling["recovery_restart"], polling["recovery_standby"]):
        assert _positive(run["resumed_s"]) and _positive(run["caught_up_s"]), run
        assert run["steady_state"]["relay_processes"][0]["rss_mb"] > 0, run
    recovery = cdc["recovery"]
    assert _positive(recovery["resumed_s"]) and _positive(recovery["caught_up_s"])
    assert recovery["steady_state"]["connect_jvm"]["rss_mb"] > 0, recovery
    assert recovery["steady_state"]["walsender"]["rss_mb"] > 0, recovery


@pytest.mark.timeout(900)
def test_the_cdc_steps_lose_nothing(cdc_run) -> None:
    result, _ = cdc_run
    drain = result["cdc"]["cdc"]["drain"]
    assert drain["extra_messages"] == 0, drain  # no crash, so no second copies
    polling = result["cdc"]["polling"]
    for run in (
        polling["recovery_restart"],
        polling["recovery_standby"],
        result["cdc"]["cdc"]["recovery"],
    ):
        assert run["written"] > 0 and run["write_errors"] == 0, run
        assert run["lost"] == 0, run
        assert run["duplicates"] >= 0, run
    e2e = result["cdc"]["e2e"]
    assert e2e["row_check"]["differences"] == 0, e2e["row_check"]
    for name, phase in e2e["phases"].items():
        assert phase["write_errors"] == 0, (name, phase)
        assert phase["unsettled"] == 0 and phase["unnotified"] == 0, (name, phase)


@pytest.mark.timeout(900)
def test_the_report_compares_the_relays(cdc_run) -> None:
    _, out = cdc_run
    report = (out / "REPORT.md").read_text()
    assert "## Polling relay vs CDC relay" in report
    assert "**Recommendation.** Use the polling relay" in report
