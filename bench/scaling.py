"""Step `scaling:run`: consumer throughput over 1-3 consumers and 3, 6, 12 partitions,
with the CPU each component spent per event, and what that predicts for more machines.

Each configuration gets topics of its own with the given partition count, the same
backlog of ReservationCreated events (inbox row + notification per event, the handler
of bench.consumer.throughput), and `run_consumers --concurrency N` (N processes, one
consumer each). The clock runs from the first handled batch to the last, as in
bench.consumer; over the same window the CPU of the consumer processes, of
PostgreSQL and of the broker is read from /proc (utime + stime, and the children's
times for processes that exited and were reaped), so the report can tell what the
two cores were doing when the curve flattened.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from django.db import connection

from bench.consumer import Window, measure
from bench.harness import scaled
from bench.profiling import (
    CpuSnapshot,
    broker_pid,
    pids_named,
    postgres_processes,
    process_tree,
)

CONSUMERS = (1, 2, 3)
PARTITIONS = (3, 6, 12)
# Per event: what this run's events cost. postgres_all (every database's work, the
# other engineers' included) is reported in cores only.
COMPONENTS = ("consumers", "postgres_backends", "postgres_background", "broker")


# -- /proc accounting (bench.profiling) ----------------------------------------------


def postgres_roles() -> dict[int, str]:
    """Each PostgreSQL process's role: "own" (a client backend of this run's
    database), "background" (WAL writer, checkpointer, autovacuum, ...) or "other".

    The bench's own connection (it polls the handled count) is left out: its time
    lands in postgres_other_databases.
    """
    return {
        pid: _role(own, kind) for pid, _app, kind, own in postgres_processes(connection)
    }


def _role(own_database: bool | None, backend_type: str) -> str:
    if backend_type != "client backend":
        return "background"
    return "own" if own_database else "other"


def snapshot(process: subprocess.Popen[bytes], broker: int | None) -> CpuSnapshot:
    """CPU seconds (reaped children included) of the consumers' process tree, of every
    postgres process, of this database's backends and the background processes, of
    the broker and of the bench itself."""
    roles = postgres_roles()
    return CpuSnapshot.take(
        {
            "consumers": process_tree(process.pid),
            "postgres_all": pids_named("postgres"),
            **{
                f"postgres_{role}": [pid for pid, r in roles.items() if r == role]
                for role in ("own", "background")
            },
            "broker": [broker] if broker else [],
            "bench": [os.getpid()],
        },
        reaped_children=True,
    )


def cpu_delta(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per component between two snapshots.

    A backend seen only at the end started inside the window (all its time counts);
    one seen only at the start exited (its remaining time is lost from its role, but
    is in postgres_all, through the postmaster's reaped-children times).
    """
    by_role = {}
    for role in ("own", "background"):
        before = start.per_pid[f"postgres_{role}"]
        by_role[role] = sum(
            max(0.0, cpu - before.get(pid, 0.0))
            for pid, cpu in end.per_pid[f"postgres_{role}"].items()
        )
    delta = {
        "consumers": end.total("consumers") - start.total("consumers"),
        "postgres_backends": by_role["own"],
        "postgres_background": by_role["background"],
        "postgres_all": end.total("postgres_all") - start.total("postgres_all"),
        "broker": end.total("broker") - start.total("broker"),
        "machine_busy": end.machine - start.machine,
        "bench": end.total("bench") - start.total("bench"),
    }
    delta["postgres_other_databases"] = (
        delta["postgres_all"] - by_role["own"] - by_role["background"]
    )
    delta["others"] = delta["machine_busy"] - sum(
        delta[k] for k in ("consumers", "postgres_all", "broker", "bench")
    )
    return delta


@dataclass
class CpuProbe:
    """bench.consumer.WindowProbe that snapshots /proc when the clock starts and stops."""

    broker: int | None = field(default_factory=broker_pid)
    start_snapshot: CpuSnapshot | None = None
    end_snapshot: CpuSnapshot | None = None

    def start(self, process: subprocess.Popen[bytes]) -> None:
        self.start_snapshot = snapshot(process, self.broker)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        self.end_snapshot = snapshot(process, self.broker)

    def report(self, events: int) -> dict[str, dict[str, float]]:
        """Per component: µs of CPU per event and cores used over the window."""
        assert self.start_snapshot is not None and self.end_snapshot is not None
        delta = cpu_delta(self.start_snapshot, self.end_snapshot)
        elapsed = self.end_snapshot.at - self.start_snapshot.at
        return {
            "us_per_event": {k: round(delta[k] / events * 1e6, 1) for k in COMPONENTS},
            # + 0.0: no "-0.0" for a component that did nothing
            "cores": {k: round(v / elapsed, 2) + 0.0 for k, v in delta.items()},
        }


# -- the step -----------------------------------------------------------------------


def _one(consumers: int, partitions: int, count: int) -> dict[str, object]:
    probe = CpuProbe()
    started = time.monotonic()
    window: Window = measure(
        count,
        concurrency=consumers,
        partitions=partitions,
        dead_letters=False,
        gated=True,
        probe=probe,
    )
    cpu = probe.report(window.count - window.first)
    row: dict[str, object] = {
        "consumers": consumers,
        "partitions": partitions,
        "events_per_s": round(window.events_per_s),
        "middle_events_per_s": round(window.middle_events_per_s()),
        "seconds": round(window.elapsed, 2),
        "wall_s": round(time.monotonic() - started, 1),
        "cpu": cpu,
    }
    print(
        f"scaling: {consumers} consumer(s), {partitions} partitions: "
        f"{row['events_per_s']} events/s (middle {row['middle_events_per_s']}), "
        f"cores {cpu['cores']}",
        flush=True,
    )
    return row


def run() -> dict[str, object]:
    """Step `scaling:run`: every (consumers, partitions) pair, one run each."""
    count = scaled(50_000, minimum=2_000)
    started = time.monotonic()
    runs = [_one(c, p, count) for p in PARTITIONS for c in CONSUMERS]
    medians = {
        k: round(statistics.median(r["cpu"]["us_per_event"][k] for r in runs), 1)
        for k in COMPONENTS
    }
    return {
        "scaling": {
            "runs": runs,
            "events": count,
            "handler": "notify_reservation_created (inbox + notification insert)",
            "consumer_processes": "run_consumers --concurrency N --no-dead-letters "
            "(N processes, one consumer thread each)",
            "protocol": "consumers start on empty topics of the run's own; once the "
            "group is stable (every member holds partitions) the backlog is produced "
            "in one Kafka transaction, visible to the read_committed consumers at its "
            "commit; the clock runs from the first handled batch to the last handled "
            "event (no join, rebalance or start-up inside it); middle_events_per_s: "
            "between 20 % and 80 % of the events handled",
            "cpu": {
                "method": "utime+stime (+ reaped children) from /proc/<pid>/stat over "
                "the clock's window; consumers: the run_consumers process tree; "
                "postgres_backends: client backends of this database "
                "(pg_stat_activity), not the bench's own; postgres_background: WAL "
                "writer, checkpointer, autovacuum...; cores.postgres_all: every "
                "postgres process; cores.postgres_other_databases: other databases' "
                "backends (other engineers' runs) and the bench's polling "
                "connection; cores.others: machine busy time "
                "(/proc/stat) of no process above (other engineers' work too)",
                "cores_available": os.cpu_count(),
                "us_per_event_median": medians,
            },
            "flattening": flattening(runs, medians),
            "prediction": predict(runs, medians),
            "step_wall_s": round(time.monotonic() - started, 1),
        }
    }


# -- reading the figures ------------------------------------------------------------


def _rate(runs: list[dict], consumers: int, partitions: int) -> float:
    return next(
        r["events_per_s"]
        for r in runs
        if r["consumers"] == consumers and r["partitions"] == partitions
    )


def effective_consumers(consumers: int, partitions: int) -> float:
    """How many consumers' worth of work the group does while every one is busy.

    The group finishes when its most loaded member does: with 3 partitions over 2
    consumers one holds 2, so the pair does at most 1.5 consumers' work.
    """
    return partitions / math.ceil(partitions / min(consumers, partitions))


def _one_consumer_rate(runs: list[dict]) -> float:
    # The best one-consumer run: other work on the machine only ever slows a run down.
    return max(_rate(runs, 1, p) for p in PARTITIONS)


def flattening(runs: list[dict], us: dict[str, float]) -> dict[str, object]:
    """Measured speed-ups beside a model: min(effective consumers x one consumer's
    rate, what the machine's cores can do at the measured CPU per event)."""
    cores = os.cpu_count() or 2
    per_event = sum(us[k] for k in COMPONENTS)
    ceiling = cores * 1e6 / per_event
    one = _one_consumer_rate(runs)
    model = {
        f"{c}c_{p}p": round(min(effective_consumers(c, p) * one, ceiling))
        for p in PARTITIONS
        for c in CONSUMERS
    }
    measured = {f"{r['consumers']}c_{r['partitions']}p": r for r in runs}
    by_run = {
        key: {
            "events_per_s": r["events_per_s"],
            "model_events_per_s": model[key],
            "effective_consumers": effective_consumers(r["consumers"], r["partitions"]),
            # What other work left this run: it was slowed by the rest, not by itself.
            "cores_left_by_others": round(
                cores
                - r["cpu"]["cores"]["postgres_other_databases"]
                - max(0.0, r["cpu"]["cores"]["others"]),
                2,
            ),
            "cores": {
                n: r["cpu"]["cores"][n]
                for n in (
                    "consumers",
                    "postgres_backends",
                    "postgres_other_databases",
                    "broker",
                    "others",
                    "machine_busy",
                )
            },
        }
        for key, r in measured.items()
    }
    flat_at = math.ceil(ceiling / one) if one else None
    most = max(CONSUMERS)
    busy = statistics.mean(
        r["cpu"]["cores"]["machine_busy"] for r in runs if r["consumers"] == most
    )
    return {
        "speedup_over_one_consumer": {
            f"{p}_partitions": {
                f"{c}_consumers": round(_rate(runs, c, p) / _rate(runs, 1, p), 2)
                for c in CONSUMERS[1:]
            }
            for p in PARTITIONS
        },
        "cpu_us_per_event": round(per_event, 1),
        "cpu_ceiling_events_per_s": round(ceiling),
        "one_consumer_events_per_s": round(one),
        "flattens_at_consumers": flat_at,
        "by_run": by_run,
        "reading": (
            f"Each event costs {us['consumers']:.0f} µs of consumer CPU, "
            f"{us['postgres_backends'] + us['postgres_background']:.0f} µs of "
            f"PostgreSQL and {us['broker']:.0f} µs of broker (medians over the "
            f"runs): {per_event:.0f} µs, so {cores} cores doing nothing else top out "
            f"near {ceiling:,.0f} events/s. One consumer is serial (its Python, "
            f"then its wait for PostgreSQL) and reached {one:,.0f} events/s at "
            "best, using well under one core with its database work; consumers "
            "add up until their sum meets that ceiling, at about "
            f"{flat_at} consumers here, and only up to effective_consumers "
            f"(3 partitions over 2 consumers: 1.5). With {most} consumers the "
            f"machine was {busy:.2f} of {cores} cores busy: {most} consumer "
            f"processes and {most} backends take turns on {cores} cores, so each "
            "consumer's wait for PostgreSQL now includes waiting for a core, and "
            "an extra consumer process mostly takes CPU from the PostgreSQL that "
            "every consumer waits for: the curve flattens before the cores are "
            "full. Runs with few cores_left_by_others measured the other "
            "engineers' load, not the consumers."
        ),
    }


def predict(runs: list[dict], us: dict[str, float]) -> dict[str, object]:
    """Events/s for N machines, one consumer each, the database on a machine of its own.

    A consumer is serial (its Python, then its wait for PostgreSQL), so a machine of
    its own gives it about the rate one consumer reaches here, where one consumer
    and its database share two cores without filling them. The database then bounds
    the sum.
    """
    one = _one_consumer_rate(runs)
    database_us = us["postgres_backends"] + us["postgres_background"]
    database_cores = os.cpu_count() or 2
    database_ceiling = database_cores * 1e6 / database_us
    machines = []
    for n in (1, 2, 3, 4, 6, 8, 12):
        rate = min(n * one, database_ceiling)
        machines.append(
            {
                "machines": n,
                "events_per_s": round(rate),
                "bound": "database" if rate >= database_ceiling else "consumers",
            }
        )
    return {
        "one_consumer_events_per_s": round(one),
        "serial_model_events_per_s": round(
            1e6 / (us["consumers"] + us["postgres_backends"])
        ),
        "consumer_cpu_bound_events_per_s": round(1e6 / us["consumers"]),
        "database_events_per_core_s": round(1e6 / database_us),
        "database_cores": database_cores,
        "database_ceiling_events_per_s": round(database_ceiling),
        "machines_until_database_bound": math.ceil(database_ceiling / one),
        "n_machines": machines,
        "assumptions": [
            "one run_consumers process (one consumer thread) per machine, with a core "
            "to itself: its rate is one_consumer_events_per_s, the best one-consumer "
            "run here (other work only slows a run down; the consumer alternates its "
            "Python and its wait for PostgreSQL, so it needs less than one core)",
            "PostgreSQL on a machine of its own with as many cores as this one "
            f"({database_cores}); its CPU per event is what was measured here "
            "(client backends + background processes) and it scales linearly with "
            "cores: optimistic, the WAL and the right edge of the UUIDv7 indexes "
            "are shared by all writers",
            "the broker is not the bound (us_per_event_median.broker; it also has "
            "machines of its own in production)",
            "network round trips between machines (about 0.1-0.5 ms per batch of "
            "500) are ignored",
            "at most one consumer per partition, and partitions a multiple of the "
            "consumers: N machines need N partitions (see effective_consumers)",
            "serial_model_events_per_s = 1e6 / (consumer + backend µs per event): "
            "a consumer whose only waits are the database's CPU time, an upper bound "
            "for one consumer; consumer_cpu_bound_events_per_s: a consumer that "
            "never waits (threads overlapping the waits, as --threads does)",
        ],
    }
