"""Run one function in many threads at once, each with its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connection

T = TypeVar("T")
R = TypeVar("R")


def run_in_parallel(func: Callable[[T], R], args: Sequence[T]) -> list[R]:
    """Call func(arg) for every arg in its own thread, all released together."""
    start = threading.Barrier(len(args))

    def call(arg: T) -> R:
        try:
            start.wait(timeout=30)
            return func(arg)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(args)) as pool:
        return list(pool.map(call, args))
