"""Relay benchmarks: drain of a pre-filled outbox, and commit -> acknowledged latency."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from django.db import connection, transaction


def _fill(
    count: int,
    topic: str,
    payload_bytes: int = 1000,
    keys: int = 1000,
    *,
    close: bool = True,
) -> None:
    # Random hex, so compression does not flatter the numbers.
    repeats = payload_bytes // 32
    with connection.cursor() as cursor:
        for start in range(0, count, 20_000):
            n = min(20_000, count - start)
            cursor.execute(
                """
                INSERT INTO events_outboxevent (event_id, event_type, schema_version, topic,
                    key, payload, headers, aggregate_type, aggregate_id, created_at,
                    last_error)
                SELECT gen_random_uuid(), 'BenchEvent', 1, %(topic)s, 'k' || (i %% %(keys)s),
                    jsonb_build_object('seq', i, 'pad',
                        (SELECT string_agg(md5(random()::text || g), '')
                         FROM generate_series(1, %(repeats)s + 0 * i) AS g))::text,
                    jsonb_build_object('event_id', gen_random_uuid()::text,
                        'event_type', 'BenchEvent', 'schema_version', '1',
                        'trace_id', md5(i::text)),
                    'bench', 'k' || (i %% %(keys)s), now(), ''
                FROM generate_series(%(start)s, %(start)s + %(n)s - 1) AS i
                """,
                {
                    "topic": topic,
                    "keys": keys,
                    "repeats": repeats,
                    "start": start,
                    "n": n,
                },
            )
    if close:
        connection.close()


def _published(topic: str) -> float:
    # The relay's own counter: asking the database would cost it a scan over the rows
    # the drain just deleted, every few ms, and measure that instead.
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("outbox_events_published_total", {"topic": topic})
    return value or 0.0


def drain(
    *, count: int = 100_000, batch_size: int = 2000, vacuum: bool = True
) -> dict[str, object]:
    """Events/s the real relay drains from an outbox pre-filled with `count` rows.

    `vacuum=False` leaves the table as autovacuum left it (the aged database's steady
    state): only ANALYZE, so the planner knows the new rows.
    """
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics
    from events.relay.outbox_relay import OutboxRelay

    topic = pipeline_settings().topic("reservation")
    create_topics([topic])
    _fill(count, topic)
    with connection.cursor() as cursor:
        cursor.execute(f"{'VACUUM ' if vacuum else ''}ANALYZE events_outboxevent")
        cursor.execute(
            "SELECT n_dead_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables"
            " WHERE relname = 'events_outboxevent'"
        )
        dead, size = cursor.fetchone()
    relay = OutboxRelay(batch_size=batch_size)  # the default poll interval (1 s)
    thread = threading.Thread(target=relay.run)
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 120 + count / 1000
    while _published(topic) < count:
        if time.monotonic() > deadline or not thread.is_alive():
            relay.stop()
            raise RuntimeError(f"the relay did not send {count} events in time")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    relay.stop()
    thread.join()
    return {
        "events": count,
        "payload_bytes": 1000,
        "batch_size": batch_size,
        "seconds": round(elapsed, 2),
        "events_per_second": round(count / elapsed),
        "vacuumed_first": vacuum,
        "dead_rows_at_start": dead,
        "outbox_bytes_at_start": size,
    }


def latency(*, rate: int = 1000, seconds: float = 10.0) -> dict[str, object]:
    import events
    from events.core.conf import pipeline_settings
    from events.core.topics import create_topics
    from events.models import PublishedEvent
    from tests.effects.event_types import TestPinged

    create_topics()
    # The relay runs as its own process, as in production: in this process it would
    # compete with the writers for the GIL and measure that instead.
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "relay_outbox"],
        env={
            **os.environ,
            "KAFKA_TOPIC_PREFIX": pipeline_settings().topic_prefix,
            # The delivery log's sent_at is the time the acknowledgement was recorded.
            "OUTBOX_DELIVERY_LOG": "true",
        },
    )
    time.sleep(3.0)
    committed: dict[int, float] = {}
    writers = 6

    def write(worker: int) -> None:
        # Each writer commits its share of the rate, one event per transaction.
        interval = writers / rate
        next_at = time.perf_counter()
        end = next_at + seconds
        n = 0
        while time.perf_counter() < end:
            with transaction.atomic():
                row = events.publish(
                    TestPinged(ping_id=f"p{worker}-{n}", key_id=f"k{worker}-{n % 25}")
                )
            committed[row.id] = time.time()
            n += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        connection.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = len(committed)
    time.sleep(2.0)
    relay.send_signal(signal.SIGTERM)
    relay.wait(timeout=30)
    sent = dict(
        PublishedEvent.objects.filter(outbox_id__in=committed.keys()).values_list(
            "outbox_id", "sent_at"
        )
    )
    lat_ms = sorted(
        (sent[i].timestamp() - t) * 1000 for i, t in committed.items() if i in sent
    )
    achieved = n / seconds
    return {
        "target_rate": rate,
        "achieved_rate": round(achieved),
        "events": n,
        "acknowledged": len(lat_ms),
        "p50_ms": round(statistics.median(lat_ms), 2),
        "p99_ms": round(lat_ms[int(len(lat_ms) * 0.99) - 1], 2),
        "max_ms": round(lat_ms[-1], 2),
    }
