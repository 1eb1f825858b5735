"""Request middleware: W3C trace context in and out; API bodies over the size limit."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config.error_views import is_api_request, json_response
from events.core.tracing import (
    new_trace_id,
    reset_trace_id,
    set_trace_id,
    trace_id_from_traceparent,
)
from http_api.api_errors import error_body, request_too_large


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


class ApiRequestSizeMiddleware:
    """Refuse an /api/ body over DATA_UPLOAD_MAX_MEMORY_SIZE with a JSON 413 before
    anything reads it.

    Django itself only notices when something reads `request.body` or `POST`, and then
    answers an HTML 400; a client that sent too much should learn the limit instead.
    Bodies without a Content-Length (chunked) are caught where they are read
    (config.error_views.bad_request, http_api.api_errors).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and is_api_request(request):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return json_response(error_body(**request_too_large()), status=413)
        return self.get_response(request)
