"""Errors under /api/ leave in the API's one JSON shape; other paths stay Django's.

DRF's exception handler (http_api.api_errors) covers what happens inside an API
view. These cover the rest: a path no view matches (a catch-all route, so it holds
with DEBUG on too), a body over the size limit, a CSRF failure, and an exception that
escaped everything, where a database that is down or a pool that is exhausted becomes
a 503 with Retry-After instead of a 500, on every path.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt

from http_api.api_errors import (
    DATABASE_UNAVAILABLE,
    DATABASE_UNAVAILABLE_ERRORS,
    error_body,
    request_too_large,
)

API_PREFIX = "/api/"
# HTML pages under /api/: the browsable API's session login and logout.
API_HTML_PAGES = frozenset({"/api/auth/login/", "/api/auth/logout/"})


def is_api_request(request: HttpRequest) -> bool:
    # path_info: the path inside the application, whatever prefix (SCRIPT_NAME) it
    # is served under.
    path = request.path_info
    return path.startswith(API_PREFIX) and path not in API_HTML_PAGES


def api_error(
    status: int, code: str, message: str, details: dict | None = None
) -> JsonResponse:
    return json_response(
        error_body(code=code, message=message, details=details or {}), status=status
    )


def json_response(body: dict, *, status: int) -> JsonResponse:
    """Compact, like DRF's JSONRenderer, so every error body looks the same."""
    return JsonResponse(
        body, status=status, json_dumps_params={"separators": (",", ":")}
    )


@csrf_exempt
def api_not_found(request: HttpRequest, unmatched: str = "") -> JsonResponse:
    """The last route under /api/: nothing else matched (unknown path, bad id)."""
    details = {"path": request.path}
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            details["did_you_mean"] = request.path + "/"
    return api_error(404, "not_found", "No API endpoint matches this path.", details)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        if isinstance(exception, RequestDataTooBig):
            return json_response(error_body(**request_too_large()), status=413)
        return api_error(400, "bad_request", "The request could not be understood.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return api_error(
            403, "permission_denied", "You do not have permission to do this."
        )
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Called by Django inside its `except` block, so sys.exc_info() is the error."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        retry_after = str(settings.DATABASE_UNAVAILABLE_RETRY_AFTER)
        if is_api_request(request):
            response: HttpResponse = json_response(
                error_body(**DATABASE_UNAVAILABLE), status=503
            )
        else:
            response = HttpResponse(
                "Service unavailable: the database is unreachable or busy. Retry "
                "shortly.\n",
                status=503,
                content_type="text/plain; charset=utf-8",
            )
        response["Retry-After"] = retry_after
        return response
    if is_api_request(request):
        return api_error(500, "server_error", "An unexpected error occurred.")
    return defaults.server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if is_api_request(request):
        return api_error(403, "csrf_failed", f"CSRF check failed: {reason}")
    return csrf.csrf_failure(request, reason)
