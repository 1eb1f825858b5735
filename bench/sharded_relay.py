"""Sharded relays: the drain with 1, 2 and 3 relay processes sharing OUTBOX_RELAY_SHARDS=3.

Protocol, the same for every row of the table and as bench.relay.drain's on the fresh
database: while the benchmark itself holds every shard's lock, the relays start (as
standbys), `count` 1 KB rows are written and the table is vacuumed; the clock starts
when the benchmark lets go of the locks and stops when the relays' own counters say
every row was acknowledged and recorded. The relays poll every 0.2 s, so they claim the
shards within that of the start. The baseline is one relay with one shard. CPU seconds
of the relays, PostgreSQL and the broker are read from /proc over the drain, to say
where the time goes and what more machines would buy (each relay on a machine of its
own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.db import connection

from bench.harness import ROOT, scaled

TICKS = os.sysconf("SC_CLK_TCK")
BASE_PORT = 9181


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    total = 0.0
    for match in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text.decode(), re.M):
        total += float(match.group(1))
    return total


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of `pids` still running."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return seconds


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings by the processes of the second (a process
    that ended in between is missed: autovacuum workers, short backends)."""
    return sum(now - before.get(pid, 0.0) for pid, now in after.items())


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _start_relays(n: int, shards: int, prefix: str) -> list[subprocess.Popen[bytes]]:
    log = (ROOT / ".local" / "bench-sharded-relays.log").open("ab")
    env = {
        **os.environ,
        "KAFKA_TOPIC_PREFIX": prefix,
        "OUTBOX_RELAY_SHARDS": str(shards),
    }
    return [
        subprocess.Popen(
            [sys.executable, "manage.py", "relay_outbox"]
            + ["--metrics-port", str(BASE_PORT + i), "--poll-interval", "0.2"],
            cwd=ROOT,
            env=env,
            stderr=log,
        )
        for i in range(n)
    ]


def _standing_by(ports: list[int]) -> bool:
    """Whether every relay serves its metrics and has joined (a member slot)."""
    from events.relay.shard_lock_keys import MEMBER_LOCK_CLASS

    try:
        for port in ports:
            _metric(port, "outbox_relay_shards_led")
    except OSError:
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::int = %s AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            [MEMBER_LOCK_CLASS],
        )
        return cursor.fetchone()[0] == len(ports)


def _hold_shards(shards: int, lock: str) -> None:
    from events.relay.shard_lock_keys import shard_lock_class

    with connection.cursor() as cursor:
        for shard in range(shards):
            cursor.execute(
                f"SELECT pg_advisory_{lock}(%s, %s)", [shard_lock_class(shards), shard]
            )


def measure(*, relays: int, shards: int, count: int) -> dict[str, object]:
    """One drain of `count` rows by `relays` processes sharing `shards` shards."""
    from bench.relay import _fill
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    conf = pipeline_settings()
    topic = conf.topic("reservation")
    create_topics()  # relay_outbox checks that every stream's topic exists
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_outboxsharding")
    _hold_shards(shards, "lock")
    processes = _start_relays(relays, shards, conf.topic_prefix)
    ports = [BASE_PORT + i for i in range(relays)]
    try:
        deadline = time.monotonic() + 120
        while not _standing_by(ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{relays} relays did not start")
            time.sleep(0.2)
        _fill(count, topic, close=False)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE events_outboxevent")
        before = sum(_metric(port, "outbox_events_published_total") for port in ports)
        relay_pids = [p.pid for p in processes]
        pg_pids, broker_pids = _pids("postgres"), _pids("kafka.Kafka")
        cpu_before = [_cpu_seconds(p) for p in (relay_pids, pg_pids, broker_pids)]
        started = time.perf_counter()
        _hold_shards(shards, "unlock")
        deadline = time.monotonic() + 120 + count / 1000
        while (
            sum(_metric(port, "outbox_events_published_total") for port in ports)
            - before
            < count
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{relays} relays did not send {count} in time")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu_after = [
            _cpu_seconds(p) for p in (relay_pids, _pids("postgres"), broker_pids)
        ]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        connection.close()  # and with it any lock still held
    relay_cpu, pg_cpu, broker_cpu = (
        _cpu_used(before, after)
        for after, before in zip(cpu_after, cpu_before, strict=True)
    )
    return {
        "relays": relays,
        "shards": shards,
        "events": count,
        "seconds": round(elapsed, 2),
        "events_per_second": round(count / elapsed),
        # Per 1,000 events, over the drain only (the fill and vacuum came before).
        "relay_cpu_ms_per_1000": round(relay_cpu / count * 1e6, 1),
        "postgres_cpu_ms_per_1000": round(pg_cpu / count * 1e6, 1),
        "broker_cpu_ms_per_1000": round(broker_cpu / count * 1e6, 1),
    }


def run() -> dict[str, object]:
    count = scaled(200_000, minimum=5_000)
    rows = [measure(relays=1, shards=1, count=count)]
    rows += [measure(relays=n, shards=3, count=count) for n in (1, 2, 3)]
    one = rows[0]
    # A relay's own CPU per event bounds what one relay machine sends; the cores here
    # are shared with PostgreSQL and the broker, so the measured drain flattens.
    relay_cpu_ms = float(one["relay_cpu_ms_per_1000"])  # type: ignore[arg-type]
    return {
        "sharded_relay": {
            "runs": rows,
            "relay_bound_events_per_s_per_relay_core": round(1e6 / relay_cpu_ms)
            if relay_cpu_ms
            else None,
        },
        "relay_drain_events_per_s_sharded_3": rows[-1]["events_per_second"],
    }
