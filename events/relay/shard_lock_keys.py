"""The advisory locks of sharded relays: who leads a shard, who is a member, of what count.

Two-int session locks, (class, key), per database:
- a shard's leader holds (shard_lock_class(S), shard). With S = 1 that is (7002, 0), the
  single leader lock of the relays before shards, so a mixed upgrade has one leader.
  With S > 1 shards use another class, and every relay also holds (7002, 0) shared: a
  relay of an older version, which leads everything on that lock, can then never lead
  beside them, and a sharded relay cannot start beside one that leads (it refuses).
- every relay holds a member lock (7003, S << 16 | slot): the count of members of its
  S sets each one's share, and a relay of another S is seen as such (it refuses, or
  others refuse it) without being counted.
"""

from __future__ import annotations

LEGACY_LEADER_LOCK = (7_002, 0)
SINGLE_SHARD_LOCK_CLASS = 7_002
SHARD_LOCK_CLASS = 7_005
MEMBER_LOCK_CLASS = 7_003
COUNT_CHECK_LOCK = (7_004, 0)
STATISTICS_LOCK = (7_004, 1)
MAX_MEMBERS = 1_024
MAX_SHARDS = 32_767  # S << 16 stays within an int4 key


def shard_lock_class(shard_count: int) -> int:
    return SINGLE_SHARD_LOCK_CLASS if shard_count == 1 else SHARD_LOCK_CLASS


def member_key(shard_count: int, slot: int) -> int:
    return shard_count << 16 | slot


def count_of_member(key: int) -> int:
    """The shard count a member lock's key says its relay runs with."""
    return key >> 16
