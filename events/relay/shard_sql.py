"""The shard of an outbox row, as SQL: the expression, conditions on it, its statistics.

The shard is computed by PostgreSQL when a relay reads, from the key alone, so writers
know nothing of shards. `hashtextextended` is the hash PostgreSQL's own hash
partitioning places rows with, so it cannot change under pg_upgrade: a key always maps
to the same shard. The count is a literal in every statement: the planner uses extended
statistics (events.relay.shard_statistics) only for the very same expression.
"""

from __future__ import annotations


def shard_expression(shard_count: int) -> str:
    """The shard of an outbox row (of its `key`)."""
    return f"mod(hashtextextended(key, 0) & 9223372036854775807, {int(shard_count)})"


def shards_condition(shard_count: int, shards: tuple[int, ...]) -> str:
    """A condition keeping the rows of `shards`."""
    listed = ", ".join(str(int(shard)) for shard in shards)
    return f"{shard_expression(shard_count)} IN ({listed})"


def shard_statistics_name(shard_count: int) -> str:
    return f"outbox_shard_{int(shard_count)}_stats"
