"""The short chaos run (`make chaos` runs the long one): about 2,000 events through the
API under gunicorn while ten faults of every kind hit the relays, the consumers, the
broker and PostgreSQL; the checker must find nothing lost, doubled, reordered or stuck.

It runs `python -m bench.chaos` as a user would, on a database, a broker and topics
of its own. PostgreSQL is restarted during it, so every connection this test process
holds is dropped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connections

from bench.chaos.faults import KINDS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def drop_connections_afterwards():
    yield
    connections.close_all()  # PostgreSQL was restarted under them


@pytest.mark.timeout(900)
def test_a_short_chaos_run_loses_doubles_and_reorders_nothing(
    tmp_path: Path, drop_connections_afterwards: None
) -> None:
    out = tmp_path / "chaos.json"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE"))
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--flows", "500", "--faults", "10"]
        # Two relays on two shards: the kills move shards (the long `make chaos` runs
        # one shard, a leader and a standby).
        + ["--relays", "2", "--shards", "2", "--seed", "7", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads(out.read_text())
    summary = {k: v for k, v in result.items() if k != "fault_log"}

    assert result["events"] >= 2_000, summary
    assert result["shards"] == 2, summary
    assert sum(result["faults"].values()) == 10, summary
    assert set(result["faults"]) == set(KINDS), summary
    assert result["lost"] == 0, summary
    assert result["duplicate_effects"] == 0, summary
    assert result["order_violations"] == 0, summary
    assert result["reordered_by_retry_topics"] == 0, summary
    assert result["dead_letters_found"] == result["dead_letters_expected"] > 0, summary
    assert result["dead_letters_unexpected"] == [], summary
    assert result["outbox_pending"] == 0 and result["consumer_lag"] == 0, summary
    assert result["api"]["retried_5xx"] == 0, summary
    assert result["passed"], summary
    assert run.returncode == 0, run.stderr[-5000:]
