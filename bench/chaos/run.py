"""One chaos run: set up, load and faults, drain, verdict, `chaos.json`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.database import ChaosPostgres
from bench.chaos.faults import KINDS
from bench.chaos.relays import ConnectWorkers, PollingRelays, Relays
from bench.chaos.stack import ROOT, Brokers, Stack

logger = logging.getLogger("bench.chaos")


@dataclass
class ChaosConfig:
    """What to run; the defaults are the short run that the test suite makes."""

    flows: int = 500  # about 2,000 events (3.9 per flow on average)
    faults: int = 10
    clients: int = 12
    seed: int = 1
    nodes: int = 1
    # What sends the outbox (OUTBOX_RELAY): relay_outbox processes, or Kafka Connect
    # workers with the Debezium connector ("cdc"); how many; and, for relay_outbox, the
    # outbox shards they share (OUTBOX_RELAY_SHARDS).
    relay: str = "polling"
    relays: int = 2
    shards: int = 1
    settle_timeout: float = 300.0
    out: Path = ROOT / "bench" / "results" / "chaos.json"
    keep_database: bool = False
    kinds: tuple[str, ...] = KINDS
    label: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


def run(config: ChaosConfig) -> dict[str, Any]:
    """Set up, run and check; whatever happens, clean up (brokers, the cluster, the
    stack's processes, slots and topics), so that a failed run leaves nothing that
    a later one would meet."""
    began = time.time()
    brokers = Brokers(nodes=config.nodes)
    postgres = ChaosPostgres()
    database = f"chaos_{config.label}"
    relays: Relays = PollingRelays()
    if config.relay == "cdc":
        relays = ConnectWorkers(
            label=config.label,
            database=database,
            count=config.relays,
            replication_factor=3 if config.nodes >= 3 else 1,
        )
    with _one_run_at_a_time():
        try:
            return _run(config, began, brokers, postgres, relays, database)
        finally:
            _clean_up(config, brokers, postgres, relays, database)


# Machine-wide, as what the runs share is: the `chaos` cluster, the broker's and the
# web's ports (a second clone of the project meets them too).
LOCK_PATH = Path("/tmp/outbox-chaos-run.lock")


@contextlib.contextmanager
def _one_run_at_a_time() -> Iterator[None]:
    """Wait for another chaos run on this machine to end (each restarts and cleans
    the cluster they share)."""
    with LOCK_PATH.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            logger.warning("waiting for another chaos run (%s) to end", lock.read())
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


def _run(
    config: ChaosConfig,
    began: float,
    brokers: Brokers,
    postgres: ChaosPostgres,
    relays: Relays,
    database: str,
) -> dict[str, Any]:
    brokers.start()
    logger.info("kafka up (%d node(s)) after %.1f s", config.nodes, time.time() - began)
    postgres.start()
    postgres.drop_leftovers()
    logger.info("postgresql up after %.1f s", time.time() - began)
    env = _environment(config, brokers, postgres, database)
    os.environ.update(env)
    postgres.create_database(database)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("create_topics", verbosity=0)
    postgres.install_commit_log(database)
    logger.info("database and topics ready after %.1f s", time.time() - began)

    from bench.chaos import checker
    from bench.chaos.driver import Driver
    from bench.chaos.faults import Injector
    from events.core.conf import pipeline_settings

    conf = pipeline_settings()
    stack = Stack(
        env=dict(os.environ),
        logs=ROOT / ".local" / "chaos" / config.label,
        web_port=8765,
        relay_count=config.relays,
        relay_kind=relays,
    )
    injector = Injector(
        stack=stack,
        brokers=brokers,
        postgres=postgres,
        rng=random.Random(config.seed),
        count=config.faults,
        kinds=config.kinds,
        poison_topics=[conf.topic(s) for s in conf.streams],
        database_url=postgres.url(database, scheme="postgresql"),
    )
    try:
        stack.start()
        # After the stack: in cdc mode the connector's slot must exist first.
        logger.info("stack up after %.1f s", time.time() - began)
        tokens, seats = _seed(config)
        logger.info("seeded after %.1f s; load starts", time.time() - began)
        driver = Driver(stack.url, tokens, seats, seed=config.seed)
        driver.start(min_flows=config.flows)
        time.sleep(2.0)  # load first, then faults
        injector.start()
        while not (injector.done.is_set() and driver.flows_done() >= config.flows):
            time.sleep(0.5)
        time.sleep(2.0)  # load after the last fault, to see it recover
        driver.stop()
        driver.join()
        load_ended = time.time()
        settled = _wait(checker.pipeline_settled, config.settle_timeout)
        settled_after = time.time() - load_ended
        # The dead-letter store is a consumer of its own: wait until it has stored the
        # poison's dead letters (a store that never does fails the verdict).
        _wait(lambda: checker.dead_letters_stored(injector.poison_sent), 60)
    finally:
        stack.stop()

    _reconnect()
    result = checker.verdict(injector.poison_sent)
    result.update(
        seed=config.seed,
        kafka_nodes=config.nodes,
        relay=config.relay,
        relays=config.relays,
        shards=config.shards,
        duration_s=round(time.time() - began, 1),
        settled=settled,
        drained_s_after_load=round(settled_after, 1),
        faults=dict(Counter(f.kind for f in injector.faults)),
        fault_log=[asdict(f) for f in injector.faults],
        max_recovery_s=_recovery_by_kind(injector.faults),
        not_recovered_in_time=[
            f.kind for f in injector.faults if f.recovered_s is None
        ],
        relay_restarts=stack.relay_restarts,
        api={
            "flows": dict(driver.stats.flows),
            "statuses": {str(k): v for k, v in sorted(driver.stats.statuses.items())},
            "retried_503": driver.stats.retried_503,
            "retried_5xx": driver.stats.retried_5xx,
            "retried_connection_errors": driver.stats.retried_connection,
            "unexpected": driver.stats.unexpected[:10],
        },
        injector_error=repr(injector.error) if injector.error else None,
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
    )
    result["passed"] = passed(result)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def passed(result: dict[str, Any]) -> bool:
    return (
        result["settled"]
        and result["lost"] == 0
        and result["missing_on_kafka"] == 0
        and result["duplicate_effects"] == 0
        and result["order_violations"] == 0
        # No handler fails on purpose in a chaos run: an event on a retry topic means a
        # fault of the database or broker was taken for the event's own.
        and result["reordered_by_retry_topics"] == 0
        and result["dead_letters_found"] == result["dead_letters_expected"]
        and not result["dead_letters_unexpected"]
        and result["outbox_pending"] == 0
        and result["consumer_lag"] == 0
        and result["api"]["retried_5xx"] == 0
        and not result["api"]["unexpected"]
        and result["injector_error"] is None
        and not result["not_recovered_in_time"]
    )


def _environment(
    config: ChaosConfig, brokers: Brokers, postgres: ChaosPostgres, database: str
) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": postgres.url(database),
        "KAFKA_BOOTSTRAP_SERVERS": brokers.bootstrap,
        "KAFKA_TOPIC_PREFIX": f"chaos-{config.label}-",
        "KAFKA_CONSUMER_GROUP": f"chaos-{config.label}",
        "KAFKA_REPLICATION_FACTOR": "3" if config.nodes >= 3 else "1",
        # The checker reads commit order from its commit log, not from the relay's
        # delivery log (off, as by default): the relays run as users run them.
        "OUTBOX_RELAY": config.relay,
        "OUTBOX_RELAY_SHARDS": str(config.shards),
        "API_WRITE_THROTTLE_RATE": "1000000/min",
        "RESERVATION_HOLD_SECONDS": "86400",
        "GUNICORN_WORKERS": "2",
        "EVENTS_AUDIT_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _seed(config: ChaosConfig) -> tuple[list[str], list[int]]:
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from payments.services import wallet_charge
    from reservations.models import Concert, Performance, Seat

    concert = Concert.objects.create(title="Chaos")
    performance = Performance.objects.create(
        concert=concert,
        venue="Chaos Hall",
        starts_at=timezone.now() + timedelta(days=9),
    )
    Seat.objects.bulk_create(
        Seat(performance=performance, number=f"S-{n:06d}", grade="R", price=100)
        # Plenty: the clients keep going until the last fault is over.
        for n in range(config.flows * 20)
    )
    tokens = []
    for n in range(config.clients):
        user = User.objects.create_user(f"chaos{n}", password=None)
        wallet_charge(user=user, amount=10_000_000)
        tokens.append(Token.objects.create(user=user).key)
    seats = list(
        Seat.objects.filter(performance=performance)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    return tokens, seats


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reconnect()
        try:
            if condition():
                return True
        except Exception as exc:  # noqa: BLE001 - the database may be restarting
            logger.info("not settled yet: %s", exc)
        time.sleep(1.0)
    return False


def _reconnect() -> None:
    """Drop connections a PostgreSQL restart broke; the next query opens a new one."""
    from django.db import connections

    connections.close_all()


def _recovery_by_kind(faults: list[Any]) -> dict[str, float | None]:
    """Per fault kind, the longest time from the fault's end (the part back, or the
    kill itself) until every event committed before that moment had been handled."""
    worst: dict[str, float | None] = {}
    for fault in faults:
        if fault.recovered_s is None or worst.get(fault.kind, 0.0) is None:
            worst[fault.kind] = None
        else:
            worst[fault.kind] = max(worst.get(fault.kind) or 0.0, fault.recovered_s)
    return worst


def _clean_up(
    config: ChaosConfig,
    brokers: Brokers,
    postgres: ChaosPostgres,
    relays: Relays,
    database: str,
) -> None:
    """Each step on its own: one that fails (the run failed half-way) does not keep
    the others from running."""

    def delete_topics() -> None:
        from events.core.topics import delete_topics_with_prefix

        delete_topics_with_prefix(f"chaos-{config.label}-")
        relays.clean_up(dict(os.environ))

    def drop_database() -> None:
        from django.db import connections

        connections.close_all()
        if not config.keep_database:
            postgres.drop_database(database)
            postgres.stop()

    for step in (delete_topics, drop_database, brokers.stop):
        try:
            step()
        except Exception:  # noqa: BLE001 - the others still run
            logger.exception("clean-up step %s failed", step.__name__)
