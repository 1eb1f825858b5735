"""Request middleware: W3C trace context in, trace id through the request, out again."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from events.tracing import (
    new_trace_id,
    reset_trace_id,
    set_trace_id,
    trace_id_from_traceparent,
)


class TraceparentMiddleware:
    """Take the trace id from the request's `traceparent` header (or start a new
    trace), make it the current trace id for the request, so `events.publish` writes
    it into the outbox headers, and answer with a `traceparent` of this hop."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trace_id = (
            trace_id_from_traceparent(request.headers.get("traceparent"))
            or new_trace_id()
        )
        token = set_trace_id(trace_id)
        try:
            response = self.get_response(request)
        finally:
            reset_trace_id(token)
        response["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        return response
