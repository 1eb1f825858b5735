"""The short chaos run (`make chaos` runs the long one): about 2,000 events through the
API under gunicorn while ten faults of every kind hit the relays, the consumers, the
broker and PostgreSQL; the checker must find nothing lost, doubled, reordered or stuck.

It runs `python -m bench.chaos` as a user would, on a PostgreSQL cluster, a broker and
topics of its own, once with two `relay_outbox` processes sharing two shards and once
(`make test-cdc`, marker `cdc`) with the CDC relay: two Kafka Connect workers, the
task's worker killed and frozen where the other run kills relays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos.faults import KINDS

ROOT = Path(__file__).resolve().parent.parent


# Two relays on two shards: the kills move shards (the long `make chaos` runs one
# shard, a leader and a standby).
POLLING = ["--relays", "2", "--shards", "2"]
CDC = ["--relay", "cdc", "--relays", "2"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "relay_args",
    [
        pytest.param(POLLING, id="polling"),
        pytest.param(CDC, id="cdc", marks=pytest.mark.cdc),
    ],
)
def test_a_short_chaos_run_loses_doubles_and_reorders_nothing(
    tmp_path: Path, relay_args: list[str]
) -> None:
    out = tmp_path / "chaos.json"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE"))
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos", "--flows", "500", "--faults", "10"]
        + [*relay_args, "--seed", "7", "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = run.communicate(timeout=720)
    except subprocess.TimeoutExpired:
        # SIGTERM: the run stops its stack and cleans up (its processes have sessions
        # of their own, which a SIGKILL of it would leave running).
        run.terminate()
        stdout, stderr = run.communicate(timeout=150)
        pytest.fail(f"the chaos run took over 12 minutes: {stderr[-5000:]}")
    assert out.exists(), stdout[-3000:] + stderr[-5000:]
    result = json.loads(out.read_text())
    summary = {k: v for k, v in result.items() if k != "fault_log"}

    assert result["events"] >= 2_000, summary
    assert result["relay"] == ("cdc" if "cdc" in relay_args else "polling"), summary
    assert result["shards"] == (1 if "cdc" in relay_args else 2), summary
    assert sum(result["faults"].values()) == 10, summary
    assert set(result["faults"]) == set(KINDS), summary
    # Every relay killed (a relay_outbox process, or the task's Connect worker) was
    # started again by the stack.
    kills = result["faults"]["relay_kill"] + result["faults"]["relay_kill_draining"]
    assert result["relay_restarts"] >= kills, summary
    assert result["lost"] == 0, summary
    assert result["missing_on_kafka"] == 0, summary
    assert result["duplicate_effects"] == 0, summary
    assert result["order_violations"] == 0, summary
    assert result["reordered_by_retry_topics"] == 0, summary
    assert result["dead_letters_found"] == result["dead_letters_expected"] > 0, summary
    assert result["dead_letters_unexpected"] == [], summary
    assert result["outbox_pending"] == 0 and result["consumer_lag"] == 0, summary
    assert result["api"]["retried_5xx"] == 0, summary
    assert result["passed"], summary
    assert run.returncode == 0, stderr[-5000:]
