"""Consumer benchmarks: events/s through a real handler with the inbox, and join time.

Steps (`python -m bench.step consumer:<name>`): `rebalance` (a consumer joins a running
group: join -> first message of every moved partition). `throughput`, `join` and
`failover` are the earlier benchmarks (bench/HISTORY.md), kept callable; bench.scaling
builds on `measure`, which runs `run_consumers` on topics of the run's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import orjson
from django.db import connection

if TYPE_CHECKING:
    from events.core.kafka import Producer


def _bench_users(n: int = 5000) -> list[int]:
    """Users the events belong to: many, as for a popular concert.

    Each notification's foreign-key check share-locks its user's row. With one user,
    or a hundred (two heap pages), concurrent consumers queue on those few rows and
    pages, and the bench measures that queue rather than the consumer.
    """
    from django.contrib.auth.models import User

    names = [f"bench-user-{i}" for i in range(n)]
    User.objects.bulk_create(
        [User(username=name) for name in names], ignore_conflicts=True
    )
    return list(User.objects.filter(username__in=names).values_list("pk", flat=True))


def _produce(count: int, user_ids: list[int], producer: Producer | None = None) -> None:
    from events.core.conf import pipeline_settings
    from events.core.kafka import build_producer
    from events.core.types import new_event_id

    topic = pipeline_settings().topic("reservation")
    if producer is None:
        producer = build_producer()
    now = datetime.now(UTC).isoformat()
    for i in range(count):
        event_id = str(new_event_id())
        envelope = {
            "id": event_id,
            "type": "ReservationCreated",
            "version": 1,
            "occurred_at": now,
            "aggregate_type": "reservation",
            "aggregate_id": str(i),
            "data": {
                "reservation_id": i,
                "seat_id": i,
                "seat_number": f"A-{i}",
                "performance_id": 1,
                "user_id": user_ids[i % len(user_ids)],
                "price": 100,
                "status": "PENDING",
                "hold_expires_at": now,
            },
        }
        while True:
            try:
                producer.produce(
                    topic,
                    key=str(i).encode(),
                    value=orjson.dumps(envelope),
                    headers=[("event_id", event_id.encode())],
                )
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def _handled() -> int:
    """How many notifications the handler has written so far (one per event).

    max(id) is one index probe. A count(*) over the inbox every few ms, as this bench
    first did, scanned the whole table each time and took a good part of a core from
    the consumer it measured.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM reservations_notification")
        return cursor.fetchone()[0]


class WindowProbe(Protocol):
    """Called when a run's clock starts and stops (bench.scaling reads /proc then)."""

    def start(self, process: subprocess.Popen[bytes]) -> None: ...

    def stop(self, process: subprocess.Popen[bytes]) -> None: ...


@dataclass
class Window:
    """What one run measured: the clock runs from the first handled batch to the last.

    `first` events were already handled when the clock started (a batch commits at
    once), so the rate is over `count - first` events.
    """

    count: int
    first: int
    elapsed: float
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return (self.count - self.first) / self.elapsed

    @property
    def seconds(self) -> float:
        """The time all `count` events would take at the measured rate."""
        return self.count / self.events_per_s

    def middle_events_per_s(self, low: float = 0.2, high: float = 0.8) -> float:
        """The rate between `low` and `high` of the events handled.

        Leaves out the start (members still joining the group) and the tail (a
        consumer with fewer partitions runs dry first, the others finish alone).
        """
        start = next(s for s in self.samples if s[1] >= low * self.count)
        end = next(s for s in self.samples if s[1] >= high * self.count)
        if end[0] <= start[0]:
            return self.events_per_s
        return (end[1] - start[1]) / (end[0] - start[0])


@contextlib.contextmanager
def own_topics(partitions: int | None = None) -> Iterator[str]:
    """Topics of this run's own (a new prefix), deleted afterwards; yield the prefix.

    Own topics, because a new group reads a topic from the start: on shared topics the
    second run would also consume the first run's events. `partitions` sets
    KAFKA_TOPIC_PARTITIONS for the main, retry and dead-letter topics alike.
    """
    from django.conf import settings
    from django.test import override_settings

    from events.core.topics import create_topics, delete_topics_with_prefix

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:4]}-"
    overrides: dict[str, object] = {"KAFKA_TOPIC_PREFIX": prefix}
    if partitions is not None:
        overrides["KAFKA_TOPIC_PARTITIONS"] = partitions
    with override_settings(**overrides):
        create_topics()
        try:
            yield prefix
        finally:
            delete_topics_with_prefix(prefix)


def consumer_env(**extra: str) -> dict[str, str]:
    """The environment of a `run_consumers` started on the current topics.

    Its group for dead letters (`<KAFKA_CONSUMER_GROUP>-dlq-store`) is made from
    KAFKA_CONSUMER_GROUP: left at the default, every bench and test process on this
    broker would join that one group and rebalance it for the others.
    """
    from events.core.conf import pipeline_settings

    prefix = pipeline_settings().topic_prefix
    return {
        **os.environ,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"{prefix}group",
        **extra,
    }


def _run(count: int, concurrency: int, threads: int = 1) -> float:
    """Seconds to handle `count` events, on topics of this run's own."""
    return measure(count, concurrency=concurrency, threads=threads).seconds


def measure(
    count: int,
    *,
    concurrency: int = 1,
    threads: int = 1,
    partitions: int | None = None,
    dead_letters: bool = True,
    gated: bool = False,
    probe: WindowProbe | None = None,
) -> Window:
    """Handle `count` events with `run_consumers --concurrency --threads`, on topics of
    this run's own with `partitions` partitions each (default: settings).

    Not `gated`: the events are on the topic before the consumers start, so the first
    consumer up handles alone until the others have joined. `gated`: the consumers
    start first; once the group is stable with every member holding partitions, the
    events are produced in one Kafka transaction, which the consumers (isolation
    read_committed, librdkafka's default) see only when it commits, all at once. The
    window then holds no join, no rebalance and no consumer's start-up CPU.
    """
    with own_topics(partitions):
        users = _bench_users()
        start_count = _handled()
        if not gated:
            _produce(count, users)
        group = f"{_prefix()}group-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "manage.py", "run_consumers", "--topics", "reservation"]
        argv += ["--group", group, "--concurrency", str(concurrency)]
        argv += ["--threads", str(threads)]
        if not dead_letters:
            argv.append("--no-dead-letters")
        process = subprocess.Popen(argv, env=consumer_env())
        try:
            if gated:
                wait_until_settled(
                    group, members=concurrency * threads, process=process
                )
                _produce_in_one_transaction(count, users)
            return _clock(process, count, start_count, probe)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _prefix() -> str:
    from events.core.conf import pipeline_settings

    return pipeline_settings().topic_prefix


def _produce_in_one_transaction(count: int, users: list[int]) -> None:
    from events.core.kafka import build_producer

    producer = build_producer(**{"transactional.id": f"{_prefix()}{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    _produce(count, users, producer)
    producer.commit_transaction(60)


def wait_until_settled(
    group: str,
    *,
    members: int,
    process: subprocess.Popen[bytes],
    timeout: float = 90.0,
) -> None:
    """Wait until `group` is stable with `members` members, each holding main-topic
    partitions (when there are enough) and all of them covered, for two looks in a row.
    """
    from events.core.conf import pipeline_settings
    from events.core.kafka import build_admin

    topic = pipeline_settings().topic("reservation")
    partitions = pipeline_settings().partitions
    admin = build_admin()
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("run_consumers exited early")
        group_info = admin.describe_consumer_groups([group])[group].result()
        held = [
            sorted(
                tp.partition
                for tp in member.assignment.topic_partitions
                if tp.topic == topic
            )
            for member in group_info.members
        ]
        settled = (
            str(group_info.state).endswith("STABLE")
            and len(held) == members
            and sorted(p for ps in held for p in ps) == list(range(partitions))
            and (members > partitions or all(held))
        )
        if settled and sorted(held) == previous:
            return
        previous = sorted(held) if settled else None
        time.sleep(0.5)
    raise TimeoutError(f"group {group} did not settle in {timeout:.0f} s")


def _clock(
    process: subprocess.Popen[bytes],
    count: int,
    start_count: int,
    probe: WindowProbe | None,
) -> Window:
    """Time the consumers from the first handled event to the last.

    The clock starts at the first handled event: start-up and the group join are
    measured by the join benchmark, not here.
    """

    # Far beyond any healthy run: an event that never arrives (dead-lettered, or lost
    # by the producer) fails the step instead of hanging it.
    deadline = time.monotonic() + 120 + count / 500

    def handled() -> int:
        if process.poll() is not None:
            raise RuntimeError("run_consumers exited early")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} events not handled in time")
        return _handled() - start_count

    while handled() == 0:
        time.sleep(0.01)
    started, first = time.perf_counter(), handled()
    if probe is not None:
        probe.start(process)
    samples = [(0.0, first)]
    while samples[-1][1] < count:
        time.sleep(0.02)
        samples.append((time.perf_counter() - started, handled()))
    if probe is not None:
        probe.stop(process)
    return Window(count=count, first=first, elapsed=samples[-1][0], samples=samples)


def throughput(*, count: int = 120_000) -> dict[str, object]:
    """Events/s handled (inbox row + notification row per event).

    One process with one consumer; one process with two and with three consumer
    threads (three is one per partition); two processes. The events are on the topic
    before the consumer starts; the clock runs from the first handled event to the last.
    Enough events that the group's rebalances while members join are a small part of
    the run.
    """
    result: dict[str, object] = {
        "events": count,
        "handler": "notify_reservation_created (inbox + notification insert)",
    }
    for name, concurrency, threads in (
        ("one_process", 1, 1),
        ("one_process_two_threads", 1, 2),
        ("one_process_three_threads", 1, 3),
        ("two_processes", 2, 1),
    ):
        seconds = _run(count, concurrency, threads)
        result[f"{name}_seconds"] = round(seconds, 2)
        result[f"{name}_events_per_second"] = round(count / seconds)
    return result


def join(*, rounds: int = 3, settle: float = 8.0) -> dict[str, object]:
    """Seconds from a second consumer joining the group to its first consumed message.

    A first consumer handles a steady flow; a second one joins the group; its log says
    how long after its subscribe (the join) and after the assignment each partition
    that moved to it delivered its first message. The slowest partition counts.
    `settle` is how long each consumer runs before the next step of a round.
    """
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    create_topics()
    users = _bench_users()
    details = [_join_round(users, settle) for _ in range(rounds)]
    return {
        "rounds": rounds,
        "protocol": pipeline_settings().group_protocol,
        "join_to_first_message_seconds": [
            d["join_to_first_message_s"] for d in details
        ],
        "assignment_to_first_message_seconds": [
            d["assignment_to_first_message_s"] for d in details
        ],
        "round_details": details,
    }


_FIRST_MESSAGE = re.compile(
    r"(\S+)\[(\d+)\] consuming ([0-9.]+) s after its assignment, ([0-9.]+) s after"
)


def _join_round(users: list[int], settle: float) -> dict[str, object]:
    """One round of `join`: the moved partitions and when each delivered."""
    import threading

    from events.core.conf import pipeline_settings

    env = consumer_env(LOG_LEVEL="INFO")
    group = f"{pipeline_settings().topic_prefix}join-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "manage.py", "run_consumers", "--topics", "reservation"]
    argv += ["--group", group]
    stop = threading.Event()

    def flow() -> None:
        while not stop.is_set():
            _produce(50, users)
            time.sleep(0.05)

    sender = threading.Thread(target=flow)
    sender.start()
    first = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    time.sleep(settle)
    second = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(settle)
    for process in (first, second):
        process.send_signal(signal.SIGTERM)
    stop.set()
    sender.join()
    first.wait(timeout=60)
    _out, log = second.communicate(timeout=60)
    found = _FIRST_MESSAGE.findall(log)
    if not found:
        raise RuntimeError(f"the second consumer consumed nothing:\n{log[-2000:]}")
    moved = [
        {
            "partition": f"{topic.removeprefix(pipeline_settings().topic_prefix)}"
            f"[{partition}]",
            "assignment_to_first_message_s": round(float(assigned), 3),
            "join_to_first_message_s": round(float(joined), 3),
        }
        for topic, partition, assigned, joined in found
    ]
    return {
        "join_to_first_message_s": max(m["join_to_first_message_s"] for m in moved),
        "assignment_to_first_message_s": max(
            m["assignment_to_first_message_s"] for m in moved
        ),
        "moved_partitions": moved,
    }


def rebalance() -> dict[str, object]:
    """Step `consumer:rebalance`: a consumer joins a running group; how long until
    every partition that moved to it delivers (target 1 s, reported, not asserted).

    Each round's figure is its slowest moved partition, from the joiner's subscribe;
    `rebalance_resume_s` is the slowest round, because the target is a bound on
    every rebalance, not on a typical one (the median is given beside it).
    """
    from bench.harness import scaled, seconds

    with own_topics():
        detail = join(rounds=scaled(3), settle=seconds(8, minimum=5))
    rounds = cast(list[float], detail["join_to_first_message_seconds"])
    return {
        "rebalance_resume_s": max(rounds),
        "rebalance_resume_statistic": "max over rounds (each round: its slowest "
        "moved partition, from the joining consumer's subscribe)",
        "rebalance_resume_median_s": statistics.median(rounds),
        "rebalance_target_s": 1.0,
        "rebalance": detail,
    }


def failover(*, rounds: int = 3) -> dict[str, object]:
    """Seconds from a `kill -9` of a consumer to its partitions being consumed again.

    Two ways: two independent `run_consumers` processes, one of them killed (nothing
    restarts it: its partitions wait for its session to time out on the broker, then
    move to the survivor); and `run_consumers --concurrency 2`, one child killed (the
    supervisor starts a new one, but under KIP-848 the dead member's partitions still
    wait for its session). Each surviving or new consumer logs when a partition that
    came to it delivers its first message; the last of those after the kill counts.
    """
    import threading

    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics

    create_topics()
    users = _bench_users()
    env = {
        **os.environ,
        "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix,
        "LOG_LEVEL": "INFO",
    }
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* consuming ", re.M)
    results: dict[str, list[float]] = {"independent": [], "supervised": []}
    for _ in range(rounds):
        for mode in results:
            group = f"{pipeline_settings().topic_prefix}fail-{uuid.uuid4().hex[:6]}"
            argv = [sys.executable, "manage.py", "run_consumers", "--topics"]
            argv += ["reservation", "--group", group, "--no-dead-letters"]
            stop = threading.Event()

            def flow(stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    _produce(20, users)
                    time.sleep(0.02)

            sender = threading.Thread(target=flow)
            sender.start()
            logs = [open(f"/tmp/failover-{mode}-{n}.log", "w+") for n in range(2)]  # noqa: SIM115
            if mode == "independent":
                victim = subprocess.Popen(argv, env=env, stderr=logs[0])
                survivor = subprocess.Popen(argv, env=env, stderr=logs[1])
                time.sleep(8)
                victim_pid = victim.pid
                processes = [victim, survivor]
            else:
                supervisor = subprocess.Popen(
                    [*argv, "--concurrency", "2"], env=env, stderr=logs[1]
                )
                time.sleep(8)
                children = (
                    Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
                    .read_text()
                    .split()
                )
                victim_pid = int(children[0])
                processes = [supervisor]
            logs[1].seek(0, 2)
            mark = logs[1].tell()
            killed_at = time.time()
            os.kill(victim_pid, signal.SIGKILL)
            time.sleep(12)
            stop.set()
            sender.join()
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
            logs[1].seek(mark)
            after = [
                datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for ts in stamp.findall(logs[1].read())
            ]
            if not after:
                raise RuntimeError(f"{mode}: no partition moved after the kill")
            results[mode].append(round(max(after) - killed_at, 2))
    return {
        "rounds": rounds,
        "session_timeout_s": "broker group.consumer.session.timeout.ms",
        "kill_to_moved_partitions_consumed_seconds": results,
    }
