"""Garbage-collector settings for the long-running pipeline processes.

A consumer keeps a whole batch alive while it works on it: the decoded envelopes,
events and units of 500 messages survive CPython's young collections (every 700 new
container objects) and are promoted, and every few batches that promotion triggers a
full collection that walks everything Django loaded at start-up, over and over
(bench/HISTORY.md has what it cost).

After `tune_for_batches()`:
- the objects that exist at start-up (modules, settings, the URL and model registries)
  are frozen: collections no longer walk them;
- a young collection runs every 50,000 surviving container objects instead of 700,
  more than a batch holds, so a batch's objects are freed by reference counting
  before any collection sees them. Reference cycles are still collected, later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_batches() -> None:
    """Freeze start-up objects and raise the young-generation threshold (call once,
    after Django and the handlers are loaded)."""
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
