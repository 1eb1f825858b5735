"""Consumer benchmarks: events/s through a real handler with the inbox, and join time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from django.db import connection


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


def _produce(count: int, user_ids: list[int]) -> None:
    from events.conf import pipeline_settings
    from events.kafka import build_producer
    from events.types import new_event_id

    topic = pipeline_settings().topic("reservation")
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
                    value=json.dumps(envelope).encode(),
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


def _run(count: int, concurrency: int, threads: int = 1) -> float:
    """Seconds to handle `count` events, on topics of this run's own.

    Own topics, because a new group reads a topic from the start: on shared topics the
    second run would also consume the first run's events.
    """
    from django.conf import settings
    from django.test import override_settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:4]}-"
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        return _run_on_own_topics(count, concurrency, threads)


def _run_on_own_topics(count: int, concurrency: int, threads: int) -> float:
    from events.conf import pipeline_settings
    from events.topics import create_topics

    create_topics()
    start_count = _handled()
    _produce(count, _bench_users())
    group = f"{pipeline_settings().topic_prefix}group-{uuid.uuid4().hex[:6]}"
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_consumers",
            "--topics",
            "reservation",
            "--group",
            group,
            "--concurrency",
            str(concurrency),
            "--threads",
            str(threads),
        ],
        env={**os.environ, "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix},
    )
    try:
        # The clock starts at the first handled event: start-up and the group join
        # are measured by the join benchmark, not here.
        while _handled() == start_count:
            time.sleep(0.01)
            if process.poll() is not None:
                raise RuntimeError("run_consumers exited early")
        started, first = time.perf_counter(), _handled() - start_count
        while _handled() - start_count < count:
            time.sleep(0.02)
            if process.poll() is not None:
                raise RuntimeError("run_consumers exited early")
        return (time.perf_counter() - started) * count / (count - first)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


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


def join(*, rounds: int = 3) -> dict[str, object]:
    """Seconds from a second consumer joining the group to its first consumed message.

    A first consumer handles a steady flow; a second one joins the group; its log says
    how long after its subscribe (the join) and after the assignment each partition
    that moved to it delivered its first message. The slowest partition counts.
    """
    import re
    import threading

    from events.conf import pipeline_settings
    from events.topics import create_topics

    create_topics()
    users = _bench_users()
    env = {
        **os.environ,
        "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix,
        "LOG_LEVEL": "INFO",
    }
    delays: list[float] = []
    joins: list[float] = []
    for _ in range(rounds):
        group = f"{pipeline_settings().topic_prefix}join-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "manage.py", "run_consumers", "--topics", "reservation"]
        argv += ["--group", group]
        stop = threading.Event()

        def flow(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                _produce(50, users)
                time.sleep(0.05)

        sender = threading.Thread(target=flow)
        sender.start()
        first = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        time.sleep(8)
        second = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        stop.set()
        sender.join()
        first.wait(timeout=60)
        _out, log = second.communicate(timeout=60)
        found = re.findall(
            r"consuming ([0-9.]+) s after its assignment, ([0-9.]+) s after", log
        )
        if not found:
            raise RuntimeError(f"the second consumer consumed nothing:\n{log[-2000:]}")
        delays.append(max(float(assigned) for assigned, _ in found))
        joins.append(max(float(joined) for _, joined in found))
    return {
        "rounds": rounds,
        "protocol": pipeline_settings().group_protocol,
        "join_to_first_message_seconds": [round(d, 3) for d in joins],
        "assignment_to_first_message_seconds": [round(d, 3) for d in delays],
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
    import re
    import threading

    from events.conf import pipeline_settings
    from events.topics import create_topics

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
