"""Whether an attempt fails: a seeded hash, so the bench can predict every outcome."""

from __future__ import annotations

import hashlib


def fails(*, seed: str, seq: int, attempt: int, p: float) -> bool:
    """True with probability `p`, independently for each (seed, seq, attempt).

    A hash rather than a random generator: a batch that is rolled back and run again
    calls the handler again for the same attempt, and must get the same answer.
    """
    digest = hashlib.blake2b(f"{seed}:{seq}:{attempt}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < p


def first_success(*, seed: str, seq: int, p: float, attempts: int) -> int | None:
    """The attempt (1-based) at which event `seq` succeeds, or None if all fail."""
    for attempt in range(1, attempts + 1):
        if not fails(seed=seed, seq=seq, attempt=attempt, p=p):
            return attempt
    return None
