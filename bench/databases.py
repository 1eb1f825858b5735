"""The benchmark's databases: `fresh` (made anew each run) and `aged` (kept, at steady state).

Both live beside the development database on the same PostgreSQL. Neither is the
development database, so `make bench` does not disturb what `make run` shows, and the
aged one is kept between runs: aging it (bench.aging) is the slow part.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bench.harness import ROOT

SERVER = os.environ.get(
    "BENCH_DATABASE_SERVER", "postgres://reservations:reservations@127.0.0.1:5432"
)
NAMES = {
    "fresh": os.environ.get("BENCH_FRESH_DATABASE", "reservations_bench_fresh"),
    "aged": os.environ.get("BENCH_AGED_DATABASE", "reservations_bench_aged"),
}


def url(kind: str) -> str:
    if kind == "dev":
        return os.environ.get("DATABASE_URL", f"{SERVER}/reservations")
    return f"{SERVER}/{NAMES[kind]}"


def use(kind: str) -> None:
    """Point this process (and the processes it starts) at the `kind` database."""
    os.environ["DATABASE_URL"] = url(kind)


def _admin(sql: str) -> str:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        cursor = conn.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        return "" if row is None else str(row[0])


def exists(kind: str) -> bool:
    return _admin(f"SELECT 1 FROM pg_database WHERE datname = '{NAMES[kind]}'") == "1"


def create(kind: str, *, drop: bool) -> None:
    """Create the `kind` database (dropping it first if `drop`) and migrate it."""
    name = NAMES[kind]
    if drop:
        # A replication slot a crashed CDC step left (bench.cdc) would refuse the
        # drop, and keeps the cluster's WAL meanwhile: the bench's databases only.
        _admin(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots"
            f" WHERE database = '{name}' AND NOT active"
        )
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if not exists(kind):
        _admin(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url(kind),
            "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        },
        check=True,
    )
