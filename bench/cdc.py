"""Polling relay vs CDC relay, same machine, same run: `python -m bench.step cdc:run`.

Runs with OUTBOX_RELAY=cdc (bench.__main__ sets it for the step); the polling relay's
processes get OUTBOX_RELAY=polling. What it measures, each time for both relays:

- **Drain** of N 1 KB rows (bench.relay._fill's rows). Polling: bench.sharded_relay's
  1-relay/1-shard protocol (rows committed, table vacuumed, clock from letting the
  relay have its shard to its counter reaching N) in this step, on this database: the
  `sharded_relay` step's `runs[0]` is the same figure from another step. CDC: the
  connector is stopped (KIP-875 `stop`: offsets flushed, no task), the N rows are
  committed as cdc-mode `publish` writes them (inserted and deleted in one
  transaction, ROWS_PER_TRANSACTION rows each), the connector is resumed, and the
  topic's end offsets are read every 20 ms: the rate from the first to the N-th
  arrival (Debezium's streaming rate) and from the resume (with the task's start).
- **Recovery after kill -9** while a writer commits about 1,000 events/s (batches of
  10 every 10 ms, one transaction each, each event a `seq` in its payload). Polling:
  `relay_outbox` killed and restarted by a supervisor after 0.5 s (as
  bench/chaos/stack.py, a service manager's restart delay); and, separately, a hot
  standby (two relays, the leader killed, not restarted). CDC: a Connect worker of the
  step's own (bench.cdc_connect.BenchWorker, not the shared one) killed and started
  again with `connect.sh start`. A reader on the topic records every message's seq and
  CreateTime. `resumed_s`: kill -> the first message produced after it; `caught_up_s`:
  kill -> every event committed before the resume is on the topic; `duplicates`:
  messages - distinct seqs; `lost`: committed - distinct seqs (must be 0).
- **Memory and processes** in the recovery load's steady state (before the kill):
  VmRSS and RssAnon of relay_outbox and its PostgreSQL backend, of the Connect JVM
  (which runs only this connector) and of the walsender and Debezium's JDBC backend.
  A backend's RSS counts the shared_buffers pages it touched; RssAnon is its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from bench.cdc_connect import BenchWorker, Connector, debezium_backends, walsender_pid
from bench.harness import ROOT, scaled, seconds

logger = logging.getLogger(__name__)

ROWS_PER_TRANSACTION = 100
POLL_S = 0.02
WRITE_RATE = 1000
WRITE_BATCH = 10  # events per transaction of the recovery writer
RESTART_DELAY_S = 0.5  # the supervisor's, as bench/chaos/stack.py
RELAY_APP = "bench-cdc-relay"
POLLING = {"OUTBOX_RELAY": "polling"}


# -- helpers ---------------------------------------------------------------------------


@contextmanager
def polling_env() -> Iterator[None]:
    """OUTBOX_RELAY=polling for the processes started inside (relay_outbox refuses to
    run in cdc mode); this process stays in cdc mode."""
    before = os.environ.get("OUTBOX_RELAY")
    os.environ["OUTBOX_RELAY"] = "polling"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OUTBOX_RELAY", None)
        else:
            os.environ["OUTBOX_RELAY"] = before


def end_offsets(consumer: Any, topic: str, partitions: int) -> int:
    from confluent_kafka import TopicPartition

    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), cached=False)[1]
        for p in range(partitions)
    )


def offsets_consumer() -> Any:
    from events.core.kafka import build_consumer

    return build_consumer("bench-cdc-offsets")


def memory(pid: int | None) -> dict[str, float] | None:
    """VmRSS and RssAnon of `pid` in MB, and its thread count (None if gone)."""
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def mb(name: str) -> float:
        return round(int(fields[name].split()[0]) / 1024, 1)

    return {
        "rss_mb": mb("VmRSS"),
        "rss_anon_mb": mb("RssAnon"),
        "threads": int(fields["Threads"]),
    }


def relay_backends() -> list[int]:
    """The relays' backends: their Django connections (PGAPPNAME) and their own
    leader and recorder connections (named `relay_outbox...` by the relay)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND (application_name LIKE %s OR application_name LIKE 'relay_outbox%%')",
            [RELAY_APP + "%"],
        )
        return [int(r[0]) for r in cursor.fetchall()]


def socket_inode(local_port: int) -> str | None:
    """The inode of this machine's TCP socket bound to `local_port` (loopback)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == local_port:
                return parts[9]
    return None


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


# -- drain -----------------------------------------------------------------------------


def fill_captured(count: int, topic: str) -> None:
    """`count` of bench.relay._fill's rows, inserted and deleted in one transaction
    per ROWS_PER_TRANSACTION, as cdc-mode publish leaves the table: empty."""
    from bench.relay import _fill

    for start in range(0, count, ROWS_PER_TRANSACTION):
        with transaction.atomic():
            _fill(min(ROWS_PER_TRANSACTION, count - start), topic, close=False)
            with connection.cursor() as cursor:
                cursor.execute(
                    "DELETE FROM events_outboxevent WHERE xact_id = pg_current_xact_id()"
                )


def cdc_drain(connector: Connector, count: int) -> dict[str, Any]:
    """Debezium's drain of `count` rows committed while the connector was stopped."""
    from events.core.conf import pipeline_settings

    conf = pipeline_settings()
    topic = conf.topic("reservation")
    consumer = offsets_consumer()
    connector.stop()
    base = end_offsets(consumer, topic, conf.partitions)
    fill_started = time.perf_counter()
    fill_captured(count, topic)
    fill_s = time.perf_counter() - fill_started
    resumed = time.perf_counter()
    connector.resume()
    first = last = None
    deadline = time.monotonic() + 120 + count / 1000
    while True:
        arrived = end_offsets(consumer, topic, conf.partitions) - base
        now = time.perf_counter()
        if arrived > 0 and first is None:
            first = now
        if arrived >= count:
            last = now
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Debezium sent {arrived} of {count} in time")
        time.sleep(POLL_S)
    time.sleep(2.0)  # anything more would be a duplicate
    extra = end_offsets(consumer, topic, conf.partitions) - base - count
    consumer.close()
    assert first is not None
    return {
        "events": count,
        "payload_bytes": 1000,
        "rows_per_transaction": ROWS_PER_TRANSACTION,
        "fill_s": round(fill_s, 2),
        "seconds_first_to_last": round(last - first, 2),
        "seconds_from_resume": round(last - resumed, 2),
        "resume_to_first_s": round(first - resumed, 2),
        "events_per_second": round((count - 1) / max(last - first, 1e-6)),
        "events_per_second_from_resume": round(count / (last - resumed)),
        "extra_messages": extra,
        "protocol": (
            "connector stopped (KIP-875), rows committed (insert + delete per "
            f"transaction of {ROWS_PER_TRANSACTION}), resumed; end offsets every "
            f"{POLL_S * 1000:.0f} ms"
        ),
    }


def polling_drain(count: int) -> dict[str, Any]:
    """The polling relay's like-for-like figure: bench.sharded_relay's 1 relay, 1
    shard, here in this step on this database."""
    from bench.sharded_relay import measure

    with polling_env():
        run = measure(relays=1, shards=1, count=count)
    return {
        **run,
        "protocol": "bench.sharded_relay.measure(relays=1, shards=1) in this step "
        "(the same as the sharded_relay step's runs[0])",
    }


# -- recovery --------------------------------------------------------------------------


@dataclass
class Written:
    """What the recovery writer committed: seq -> wall-clock time its transaction
    began (a few ms before the commit; CreateTime is compared with it)."""

    at: dict[int, float] = field(default_factory=dict)
    errors: int = 0
    first_error: str = ""


class Writer(threading.Thread):
    """About WRITE_RATE events/s, WRITE_BATCH per transaction, on a connection of its
    own; in cdc mode each transaction deletes its rows again."""

    def __init__(self, topic: str, *, cdc: bool) -> None:
        super().__init__(daemon=True)
        self.topic, self.cdc = topic, cdc
        self.stopping = threading.Event()
        self.written = Written()

    def run(self) -> None:
        import psycopg

        from bench.sql_writer import django_conninfo

        insert = """
            INSERT INTO events_outboxevent (event_id, event_type, schema_version, topic,
                key, payload, headers, aggregate_type, aggregate_id, created_at,
                last_error)
            SELECT gen_random_uuid(), 'BenchEvent', 1, %(topic)s, 'k' || (i %% 1000),
                jsonb_build_object('seq', i, 'pad', repeat(md5(i::text), 30))::text,
                jsonb_build_object('event_id', gen_random_uuid()::text,
                    'event_type', 'BenchEvent', 'schema_version', '1',
                    'trace_id', md5(i::text)),
                'bench', 'k' || (i %% 1000), now(), ''
            FROM generate_series(%(start)s::int, %(end)s::int) AS i
        """
        delete = "DELETE FROM events_outboxevent WHERE xact_id = pg_current_xact_id()"
        interval = WRITE_BATCH / WRITE_RATE
        seq = 0
        with psycopg.connect(**django_conninfo()) as conn:
            next_at = time.perf_counter()
            while not self.stopping.is_set():
                began = time.time()  # the events' "written at": before the commit
                try:
                    with conn.transaction():
                        conn.execute(
                            insert,
                            {
                                "topic": self.topic,
                                "start": seq,
                                "end": seq + WRITE_BATCH - 1,
                            },
                        )
                        if self.cdc:
                            conn.execute(delete)
                except psycopg.Error as error:
                    if not self.written.errors:
                        logger.error("the recovery writer's first error: %s", error)
                    self.written.errors += 1
                    self.written.first_error = str(error)
                else:
                    for s in range(seq, seq + WRITE_BATCH):
                        self.written.at[s] = began
                    seq += WRITE_BATCH
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1:
                    next_at = time.perf_counter()


class Reader(threading.Thread):
    """Every message on the topic from its end offsets at the start: seq, CreateTime."""

    def __init__(self, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import TopicPartition

        from events.core.kafka import build_consumer

        self.consumer = build_consumer("bench-cdc-recovery-reader")
        # Explicit end offsets, read now: OFFSET_END would be resolved at the first
        # fetch, after the writer may have started.
        starts = [
            TopicPartition(topic, p, self.consumer.get_watermark_offsets(
                TopicPartition(topic, p), cached=False)[1])
            for p in range(partitions)
        ]  # fmt: skip
        self.consumer.assign(starts)
        self.stopping = threading.Event()
        self.seen: list[tuple[int, float]] = []  # (seq, CreateTime s)
        self.ready = threading.Event()

    def run(self) -> None:
        import json

        while not self.stopping.is_set():
            messages = self.consumer.consume(1000, timeout=0.1)
            self.ready.set()
            for m in messages:
                if m.error():
                    continue
                self.seen.append(
                    (json.loads(m.value())["seq"], m.timestamp()[1] / 1000)
                )
        self.consumer.close()


def recovery(
    *, kill: Any, restart: Any, mode: str, cdc: bool, sample: Any
) -> dict[str, Any]:
    """Write ~1,000/s, call `kill` (returns the kill's wall time) mid-stream, `restart`
    (None for a hot standby), keep writing, then wait until every event is read."""
    from events.core.conf import pipeline_settings

    conf = pipeline_settings()
    topic = conf.topic("reservation")
    reader = Reader(topic, conf.partitions)
    reader.start()
    reader.ready.wait(30)
    writer = Writer(topic, cdc=cdc)
    writer.start()
    time.sleep(seconds(10, minimum=4))
    steady = sample()
    before_kill = len(reader.seen)
    killed_at = kill()
    # The restart runs beside the writer, so both relays see the same writing window.
    restarted: list[float] = []
    restarter = threading.Thread(
        target=lambda: restarted.append(restart()) if restart else None, daemon=True
    )
    restarter.start()
    time.sleep(seconds(15, minimum=8))
    writer.stopping.set()
    writer.join()
    restarter.join(timeout=180)
    restart_s = restarted[0] if restarted else None
    written = dict(writer.written.at)
    deadline = time.monotonic() + 90
    while {s for s, _ in reader.seen} < written.keys():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    reader.stopping.set()
    reader.join()
    seen = list(reader.seen)
    distinct = {s for s, _ in seen}
    after = [t for _, t in seen if t > killed_at]
    resumed = min(after) if after else None
    # Caught up: every event committed before the first message after the kill is on
    # the topic (its first copy's CreateTime).
    first_copy: dict[int, float] = {}
    for s, t in seen:
        first_copy.setdefault(s, t)
    backlog = [s for s, at in written.items() if resumed and at <= resumed]
    caught = max((first_copy.get(s, float("inf")) for s in backlog), default=None)
    lags = sorted(
        (first_copy[s] - at) * 1000
        for s, at in written.items()
        if s in first_copy and at < killed_at - 1
    )
    return {
        "mode": mode,
        "written": len(written),
        "write_errors": writer.written.errors,
        "first_write_error": writer.written.first_error,
        "messages": len(seen),
        "distinct": len(distinct),
        "duplicates": len(seen) - len(distinct),
        "lost": len(written.keys() - distinct),
        "messages_before_kill": before_kill,
        "resumed_s": round(resumed - killed_at, 2) if resumed else None,
        "caught_up_s": round(caught - killed_at, 2)
        if caught and caught != float("inf")
        else None,
        "restart_command_s": restart_s,
        "lag_before_kill_p50_ms": round(lags[len(lags) // 2], 1) if lags else None,
        "steady_state": steady,
    }


class Supervised:
    """relay_outbox processes restarted RESTART_DELAY_S after they die (or not)."""

    def __init__(self, count: int, *, restart: bool) -> None:
        from events.core.conf import pipeline_settings

        self.env = {
            **os.environ,
            **POLLING,
            "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix,
        }
        self.restart = restart
        self.stopping = False
        self.restarts = 0
        self.log = (ROOT / ".local" / "bench-cdc-relays.log").open("ab")
        self.relays = [self._spawn(n) for n in range(count)]
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _spawn(self, n: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "manage.py", "relay_outbox"],
            cwd=ROOT,
            env={**self.env, "PGAPPNAME": f"{RELAY_APP}-{n}"},
            stderr=self.log,
        )

    def _watch(self) -> None:
        while not self.stopping:
            for n, relay in enumerate(self.relays):
                if self.restart and relay.poll() is not None and not self.stopping:
                    time.sleep(RESTART_DELAY_S)
                    self.relays[n] = self._spawn(n)
                    self.restarts += 1
            time.sleep(0.05)

    def leader(self) -> int:
        """Which relay holds shard 0: the one whose socket is the client end of the
        backend holding the session advisory lock (relay_outbox names its leader
        connection `relay_outbox`, whichever relay it is)."""
        from events.relay.shard_lock_keys import LEGACY_LEADER_LOCK

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a"
                " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.classid::int = %s AND l.objid::int = %s"
                " AND l.database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())",
                list(LEGACY_LEADER_LOCK),
            )
            row = cursor.fetchone()
        if row is None:
            raise RuntimeError("no relay leads shard 0")
        inode = socket_inode(int(row[0]))
        for n, relay in enumerate(self.relays):
            if inode and inode in socket_inodes(relay.pid):
                return n
        raise RuntimeError(f"no relay owns the leader's socket (port {row[0]})")

    def kill_leader(self) -> float:
        n = self.leader()
        self.relays[n].send_signal(signal.SIGKILL)
        return time.time()

    def stop(self) -> None:
        self.stopping = True
        self.watcher.join()
        for relay in self.relays:
            relay.terminate()
        for relay in self.relays:
            relay.wait(timeout=60)
        self.log.close()


def wait_leader(relays: Supervised, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            relays.leader()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def polling_sample(relays: Supervised) -> dict[str, Any]:
    backends = relay_backends()
    return {
        "relay_processes": [memory(r.pid) for r in relays.relays],
        "postgres_backends": [memory(p) for p in backends],
        "processes": {
            "relay_outbox": len(relays.relays),
            "postgres_backends": len(backends),
        },
    }


def polling_recovery(*, standby: bool) -> dict[str, Any]:
    relays = Supervised(2 if standby else 1, restart=not standby)
    try:
        wait_leader(relays)
        if standby:
            time.sleep(1.0)  # the second relay is up and standing by
        result = recovery(
            kill=relays.kill_leader,
            restart=None,
            mode="polling, hot standby" if standby else "polling, supervisor restart",
            cdc=False,
            sample=lambda: polling_sample(relays),
        )
        result["supervisor_restarts"] = relays.restarts
        result["restart_delay_s"] = None if standby else RESTART_DELAY_S
    finally:
        relays.stop()
    return result


def cdc_sample(worker: BenchWorker) -> dict[str, Any]:
    backends = debezium_backends()
    return {
        "connect_jvm": memory(worker.pid()),
        "walsender": memory(walsender_pid()),
        "postgres_backends": [
            {"backend_type": t, "application_name": a, **(memory(p) or {})}
            for p, t, a in backends
        ],
        "processes": {"connect_jvm": 1, "postgres_backends": len(backends)},
    }


def cdc_recovery(worker: BenchWorker) -> dict[str, Any]:
    connector = Connector(worker.url)
    worker.ctl("start")
    try:
        connector.register()

        def kill() -> float:
            os.kill(worker.pid(), signal.SIGKILL)
            return time.time()

        def restart() -> float:
            took = worker.ctl("start")
            connector.wait_running()
            return took

        result = recovery(
            kill=kill,
            restart=restart,
            mode="cdc, worker restarted (connect.sh start)",
            cdc=True,
            sample=lambda: cdc_sample(worker),
        )
        result["offset_flush_ms"] = int(os.environ.get("CONNECT_OFFSET_FLUSH_MS", 1000))
    finally:
        try:
            connector.delete()
        finally:
            worker.ctl("stop")
    return result


def connector_timing() -> dict[str, str]:
    """The connector settings that bound Debezium's latency, as registered (a key the
    project's config leaves out runs at Debezium's default)."""
    from events.cdc.connector import connector_config
    from events.core.conf import pipeline_settings

    config = connector_config(pipeline_settings(), connection.settings_dict)
    defaults = {"poll.interval.ms": "500", "max.batch.size": "2048",
                "max.queue.size": "8192"}  # fmt: skip
    return {
        k: config.get(k, f"{v} (Debezium's default)") for k, v in defaults.items()
    } | {"offset.flush.interval.ms": os.environ.get("CONNECT_OFFSET_FLUSH_MS", "1000")}


# -- the step --------------------------------------------------------------------------


def run() -> dict[str, Any]:
    """Step `cdc:run`: drain, recovery after kill -9, memory; polling and CDC."""
    from bench.naive_relay import clear_orphans, exit_on_sigterm
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    conf = pipeline_settings()
    if not conf.cdc:
        raise RuntimeError("cdc:run needs OUTBOX_RELAY=cdc in its environment")
    exit_on_sigterm()
    clear_orphans()
    create_topics()
    count = scaled(200_000, minimum=5_000)
    started = time.monotonic()
    # Polling first: the slot does not exist yet, so nothing decodes its rows.
    polling = {
        "drain": polling_drain(count),
        "recovery_restart": polling_recovery(standby=False),
        "recovery_standby": polling_recovery(standby=True),
    }
    connector = Connector(conf.cdc_connect_url)
    try:
        register_s = connector.register()
        drain = cdc_drain(connector, count)
    finally:
        connector.delete()
    cdc = {
        "connector_timing": connector_timing(),
        "drain": drain,
        "register_s": register_s,
        "connect_url": conf.cdc_connect_url,
        "recovery": cdc_recovery(BenchWorker()),
        # Not measured: a second worker in the group as a hot standby. With Connect's
        # incremental cooperative rebalancing a departed worker's tasks wait
        # scheduled.rebalance.max.delay.ms (Connect's default 300,000 ms;
        # infra/connect/connect.sh sets 10,000) for it to come back before moving to
        # the survivor.
        "standby_note": (
            "a second Connect worker takes a killed worker's task after "
            "scheduled.rebalance.max.delay.ms (10 s in connect.sh; Connect's default "
            "5 min), plus the task's start; not measured here"
        ),
    }
    return {
        "cdc_drain_events_per_s": drain["events_per_second"],
        "cdc": {
            "polling": polling,
            "cdc": cdc,
            "polling_drain_reference": (
                "cdc.polling.drain (this step) = sharded_relay.runs[0]'s protocol"
            ),
            "step_s": round(time.monotonic() - started, 1),
        },
    }
