"""Commit → handler-committed latency read off the database's own clock.

PostgreSQL records when each transaction committed (`track_commit_timestamp`, which
infra/postgres.sh turns on). The reservation's business transaction is the last to
write its seat (HELD); the SeatReserved handler's transaction is the last to write the
reservation (RESERVED). So for a reservation that nothing touched since,
commit_ts(reservation.xmin) − commit_ts(seat.xmin) is the time from the API's commit to
the handler's, with no client or polling in the measurement.
"""

from __future__ import annotations

from django.db import connection

LATENCY_SQL = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(r.xmin)
                        - pg_xact_commit_timestamp(s.xmin)) * 1000
FROM reservations_reservation r
JOIN reservations_seat s ON s.id = r.seat_id
WHERE r.id > %s AND r.status = 'RESERVED'
"""


def require_commit_timestamps() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW track_commit_timestamp")
        if cursor.fetchone()[0] != "on":
            raise SystemExit(
                "track_commit_timestamp is off: run `bash infra/postgres.sh start` "
                "(it sets it and restarts PostgreSQL)"
            )


def last_reservation_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM reservations_reservation")
        return int(cursor.fetchone()[0])


def reservation_latencies_ms(after_id: int) -> list[float]:
    """Business commit → SeatReserved handler commit, ms, for reservations after `after_id`."""
    with connection.cursor() as cursor:
        cursor.execute(LATENCY_SQL, [after_id])
        return [float(row[0]) for row in cursor.fetchall()]


def pending_reservations(after_id: int) -> int:
    """Reservations after `after_id` whose handler has not committed (still PENDING)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM reservations_reservation "
            "WHERE id > %s AND status = 'PENDING'",
            [after_id],
        )
        return int(cursor.fetchone()[0])


COMMIT_TIMES_SQL = """
SELECT r.id,
       extract(epoch FROM pg_xact_commit_timestamp(s.xmin)) * 1000,
       extract(epoch FROM pg_xact_commit_timestamp(r.xmin)) * 1000
FROM reservations_reservation r
JOIN reservations_seat s ON s.id = r.seat_id
WHERE r.id > %s AND r.status = 'RESERVED'
"""


def reservation_commit_times(after_id: int) -> list[tuple[int, float, float]]:
    """(reservation id, business commit, handler commit) for the reservations after
    `after_id` that the SeatReserved handler completed; commits in ms since the epoch.

    The same rows and clock as reservation_latencies_ms, so that other clocks on this
    machine (a Kafka message's CreateTime) can be placed between the two commits.
    """
    with connection.cursor() as cursor:
        cursor.execute(COMMIT_TIMES_SQL, [after_id])
        return [(int(r), float(b), float(h)) for r, b, h in cursor.fetchall()]
