"""The chaos run's PostgreSQL: a cluster of its own, its database, and the commit log.

A cluster of its own (Debian's `chaos` cluster on port 5442, made by infra/postgres.sh
like the project's own): the run restarts PostgreSQL as a fault, and restarting the
project's cluster would break whatever else uses it, `make run` and the suite's other
tests included.

The commit log is a table the checker reads, filled by a trigger on the outbox in the
writing transaction: every event committed, with its outbox id (per key, commit order),
whichever relay sends it. The polling relay deletes sent rows and the CDC relay's rows
are deleted as they are written, so the outbox itself says nothing afterwards; and the
log does not depend on the relay under test saying what it sent.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.chaos.stack import ROOT

if TYPE_CHECKING:
    from psycopg import Connection

POSTGRES_SCRIPT = ROOT / "infra" / "postgres.sh"

COMMIT_LOG_SQL = """
CREATE TABLE chaos_commit_log (
    outbox_id bigint PRIMARY KEY,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    topic text NOT NULL,
    key text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX chaos_commit_log_created ON chaos_commit_log (created_at);
CREATE FUNCTION chaos_log_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_commit_log
    VALUES (NEW.id, NEW.event_id, NEW.event_type, NEW.topic, NEW.key, NEW.created_at);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_log_commit AFTER INSERT ON events_outboxevent
    FOR EACH ROW EXECUTE FUNCTION chaos_log_commit();
"""


@dataclass(frozen=True)
class ChaosPostgres:
    """The `chaos` cluster, started and restarted through infra/postgres.sh."""

    version: str = os.environ.get("PG_VERSION", "15")
    cluster: str = "chaos"
    port: int = 5442
    user: str = "reservations"
    password: str = "reservations"

    def url(self, database: str, *, scheme: str = "postgres") -> str:
        return (
            f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"
        )

    def start(self) -> None:
        """Create the cluster on first use (about 3 s), start it, wait until ready."""
        env = dict(
            os.environ,
            PG_VERSION=self.version,
            PG_CLUSTER=self.cluster,
            PG_PORT=str(self.port),
            PG_USER=self.user,
            PG_PASSWORD=self.password,
            PG_DB="postgres",
        )
        subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), "start"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def restart(self) -> None:
        """Fast shutdown (every session terminated), then start: the fault."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            self._drop(conn, name)
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_leftovers(self) -> None:
        """Drop what an earlier run that did not finish left (the cluster is the
        runs' own): its databases, and with them the slots that retain WAL."""
        import psycopg

        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            names = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'chaos\\_%'"
            ).fetchall()
            for (name,) in names:
                self._drop(conn, name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            self._drop(conn, name)

    def install_commit_log(self, database: str) -> None:
        """After migrate: the outbox table must exist."""
        import psycopg

        with psycopg.connect(
            self.url(database, scheme="postgresql"), autocommit=True
        ) as conn:
            conn.execute(COMMIT_LOG_SQL)

    def _drop(self, conn: Connection, name: str) -> None:
        """Drop `name` and the replication slots on it (a slot blocks DROP DATABASE;
        a stopped worker's walsender may hold its slot a moment longer)."""
        deadline = time.monotonic() + 30
        while slots := conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
            [name],
        ).fetchall():
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication slots on {name} still in use: {slots}")
            for slot, pid in slots:
                if pid:
                    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            time.sleep(0.2)
        # Not WITH (FORCE): it refuses when an autovacuum worker is on the database
        # (not a process of this role), which after a load is often. A plain DROP
        # stops autovacuum itself; the run's own sessions are ended first.
        import psycopg

        while True:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND usename = current_user"
                " AND pid <> pg_backend_pid()",
                [name],
            )
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _admin_url(self) -> str:
        return self.url("postgres", scheme="postgresql")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", self.version, self.cluster, *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )
