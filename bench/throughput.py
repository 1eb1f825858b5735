"""Component throughput on whichever database the step runs on (fresh or aged).

The same code measures both, so fresh vs steady state is one variable: the tables.
"""

from __future__ import annotations

from bench.harness import scaled


def relay() -> dict[str, object]:
    """Drain of a pre-filled outbox of 1 KB events by the real relay (bench.relay.drain).

    The fresh database's outbox is vacuumed first; the aged one's is left as its churn
    and autovacuum left it.
    """
    import os

    from bench.databases import NAMES
    from bench.relay import drain

    aged = os.environ["DATABASE_URL"].endswith("/" + NAMES["aged"])
    return {"relay_drain": drain(count=scaled(200_000, minimum=5_000), vacuum=not aged)}


def consumer() -> dict[str, object]:
    """Events/s with effectively-once effects (inbox + notification row per event).

    One process with one consumer (what a `run_consumers` process runs by default),
    one process with two consumer threads, and `--concurrency 2` (what `make run`
    starts). Gated (bench.consumer.measure): the group settles first, then the backlog
    arrives at once, so the window holds neither joins nor start-up.
    """
    from bench.consumer import measure

    count = scaled(120_000, minimum=5_000)
    result: dict[str, object] = {"events": count, "protocol": "gated"}
    for name, concurrency, threads in (
        ("one_process", 1, 1),
        ("one_process_two_threads", 1, 2),
        ("concurrency_2", 2, 1),
    ):
        window = measure(count, concurrency=concurrency, threads=threads, gated=True)
        result[name] = round(count / window.seconds)
    return {"consumer": result}
