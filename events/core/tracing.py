"""The trace id that travels from an API request through the outbox to the handlers.

It is a W3C trace id (32 hex digits). The web layer sets it from an incoming
`traceparent` header; the consumer sets it from the message headers; anything else that
publishes gets a fresh one.
"""

from __future__ import annotations

import contextvars
import re
import secrets

_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trace_id", default=None
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def current_trace_id() -> str | None:
    return _trace_id.get()


def set_trace_id(trace_id: str | None) -> contextvars.Token[str | None]:
    return _trace_id.set(trace_id)


def reset_trace_id(token: contextvars.Token[str | None]) -> None:
    _trace_id.reset(token)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_id_from_traceparent(value: str | None) -> str | None:
    """Return the trace id of a valid W3C traceparent header, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1)
