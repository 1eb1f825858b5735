"""Capturing formatted JSON log lines from any thread (the consumer's included)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from config.logging import JsonFormatter, TraceIdFilter


class JsonLines(logging.Handler):
    """Keep every record as the JSON object the production formatter makes of it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(TraceIdFilter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def where(self, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in list(self.lines)
            if all(line.get(k) == v for k, v in fields.items())
        ]


@contextmanager
def json_log_lines(*names: str) -> Iterator[JsonLines]:
    """Attach a JsonLines handler to the root logger and to `names` (which may not
    propagate, like events.observability.audit) at INFO for the duration."""
    capture = JsonLines()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in names)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)
