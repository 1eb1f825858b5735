"""Log formatting: one JSON object per line, with the trace id of the running request
or handler (events.core.tracing) on every record.

Used by settings.LOGGING; the `events.audit` logger always goes through it, other
loggers when LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from events.core.tracing import current_trace_id

# What a plain-text line shows where there is no trace id.
NO_TRACE = "-"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "trace_id",
}


class TraceIdFilter(logging.Filter):
    """Stamp the current trace id on a record at the moment it is logged.

    Attached to handlers, it runs in the thread that logs, where the trace id
    context variable is set (a consumer thread, a request), even if the record is
    formatted later or elsewhere.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            record.trace_id = current_trace_id() or NO_TRACE
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: time, level, logger, message, trace id,
    any `extra` fields, and the exception if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id in (None, NO_TRACE):
            trace_id = current_trace_id()
        if trace_id:
            data["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data and value is not None:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        # orjson: several times faster than json for the audit log's line per event. It
        # refuses what json would still write (integers over 64 bits, lone surrogates):
        # those lines fall back to json rather than being lost.
        try:
            return orjson.dumps(
                data, default=str, option=orjson.OPT_NON_STR_KEYS
            ).decode()
        except TypeError:
            return json.dumps(data, default=str)
