"""Where the relay reads next: windows of commit time (`Window`, `FETCH_SQL`).

Rows are read in windows of commit time, not by a running id: a window holds the rows
whose transactions committed after the `lower` snapshot and up to its `upper` one,
paged in id order. Walking by id alone skips a row whose transaction is still open
(id 10) once a later id of another key was read (11); after 10 commits, the same key's
next event (12) could be read, and sent, before 10. In windows, 10 and 12 both
committed after the last window, so they come in the same one, in id order, and the
per-key lock in events.core.outbox.publish makes id order commit order for a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.relay.shard_sql import shards_condition
from events.relay.shards import ShardFilter

# An outbox row as the relay reads it: (id, topic, key, payload, headers as JSON text).
Row = tuple[int, str, str, str, str]

# The statement's own snapshot comes back with the rows (a LEFT JOIN, so also when
# there are none); it becomes the window's upper bound. `{shards}` is empty, or keeps the
# shards a relay leads (events.relay.shard_sql.shards_condition).
FETCH_TEMPLATE = """
    SELECT s.snap::text, o.id, o.topic, o.key, o.payload, o.headers::text
    FROM (SELECT pg_current_snapshot() AS snap) AS s
    LEFT JOIN LATERAL (
        SELECT id, topic, key, payload, headers
        FROM events_outboxevent
        WHERE parked_at IS NULL AND id > %(after)s
            AND NOT pg_visible_in_snapshot(xact_id, %(lower)s::pg_snapshot)
            AND (%(upper)s::pg_snapshot IS NULL
                 OR pg_visible_in_snapshot(xact_id, %(upper)s::pg_snapshot)){shards}
        ORDER BY id
        LIMIT %(limit)s
    ) AS o ON true
"""
FETCH_SQL = FETCH_TEMPLATE.format(shards="")


def fetch_sql(shards: ShardFilter) -> str:
    """The read of the rows of `shards` (of every row, without a condition, when they
    are all the shards)."""
    if shards.everything:
        return FETCH_SQL
    return FETCH_TEMPLATE.format(
        shards=" AND " + shards_condition(shards.shard_count, shards.shards)
    )


# A snapshot in which nothing is visible: a window from it holds every pending row.
EVERYTHING = "1:1:"


@dataclass(frozen=True)
class Window:
    """Rows committed after `lower`, up to `upper`, past id `after`.

    `upper` is None until the window's first read sets it, so a window's pages all
    see the same commits.
    """

    lower: str = EVERYTHING
    upper: str | None = None
    after: int = 0

    @property
    def from_the_start(self) -> bool:
        """Whether a read of this window sees every pending row, not a later part."""
        return self.lower == EVERYTHING and self.after == 0

    def next(self, rows: list[Row], snapshot: str, full: bool) -> Window:
        """The window after a read of this one returned `rows` under `snapshot`."""
        upper = self.upper or snapshot
        if full:  # more of this window may be waiting: page on by id
            return Window(self.lower, upper, rows[-1][0])
        return Window(lower=upper)  # this window is done; the next starts after it

    def params(self, limit: int) -> dict[str, Any]:
        """FETCH_SQL's parameters for a page of at most `limit` rows."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "after": self.after,
            "limit": limit,
        }
