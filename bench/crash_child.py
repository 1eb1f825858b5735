"""The process bench.crash kills: a writer that says which reservations committed.

`python -m bench.crash_child before|ours PERFORMANCE_ID LIMIT` sets Django up, prints
`ready` and waits for a line on stdin, so the parent can start it ahead of its trial
and time the kill from commits, not from start-up. Then it reserves the performance's
AVAILABLE seats one transaction at a time, as fast as one thread can, and prints each
reservation's id (flushed) once `reservation_create` has returned, i.e. after the
commit. With `before`, events go to the in-process after-commit bus
(bench.before_design.AfterCommitBus) whose handlers run on this process's thread pool;
with `ours`, to the outbox (the real `events.publish`), for relay_outbox and
run_consumers to carry.

It writes at most LIMIT reservations; the parent normally kills it well before.
"""

from __future__ import annotations

import contextlib
import os
import sys


def main(argv: list[str]) -> None:
    design, performance_id, limit = argv[0], int(argv[1]), int(argv[2])
    if design not in ("before", "ours"):
        raise SystemExit(f"unknown design {design!r}: before or ours")
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    django.setup()
    from bench import writer
    from bench.before_design import HANDLER_WORKERS, AfterCommitBus
    from reservations.models import Seat, SeatStatus

    writer.long_holds()
    writer.size_pool(HANDLER_WORKERS + 2)
    users = writer.bench_users()
    bus = AfterCommitBus() if design == "before" else None
    print("ready", flush=True)
    sys.stdin.readline()
    seat_ids = list(
        Seat.objects.filter(performance_id=performance_id, status=SeatStatus.AVAILABLE)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    with bus.installed() if bus else contextlib.nullcontext():
        for n, seat_id in enumerate(seat_ids):
            reservation_id = writer.write_one(users[n % len(users)], seat_id)
            print(reservation_id, flush=True)
        if bus is not None:
            bus.wait_idle(timeout=60)
            bus.shutdown()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
