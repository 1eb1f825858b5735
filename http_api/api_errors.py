"""The API's one exception handler: every error leaves as the same JSON body.

    {"error": {"code": "seat_unavailable", "message": "...", "details": {...}}}

Settings: REST_FRAMEWORK["EXCEPTION_HANDLER"] =
"http_api.api_errors.api_exception_handler".
An ApplicationError's kind (`http_api.errors`) maps to an HTTP status here, so
services never speak HTTP and this module needs no app's list of codes. Anything not
handled here stays a 500, which Django logs.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from http_api.errors import (
    ApplicationError,
    Conflict,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    NotFound,
)

logger = logging.getLogger(__name__)


class ErrorFields(TypedDict):
    """The fields of the error body (`error_body`'s keyword arguments)."""

    code: str
    message: str
    details: dict[str, Any]


# The database is down, restarting, refused the connection, or the process's pool had
# no free connection in time (psycopg_pool.PoolTimeout, which Django wraps in
# OperationalError): worth retrying, so a 503 with Retry-After, not a 500.
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE: ErrorFields = {
    "code": "database_unavailable",
    "message": "The database is unavailable or busy; retry after the time given in "
    "the Retry-After header.",
    "details": {},
}


def request_too_large() -> ErrorFields:
    """The 413 body's fields; the limit is Django's DATA_UPLOAD_MAX_MEMORY_SIZE."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return {
        "code": "request_too_large",
        "message": f"The request body is larger than the limit of {limit} bytes.",
        "details": {"max_bytes": limit},
    }


# The first kind an error is an instance of gives its status; any other
# ApplicationError is a 400. Apps choose a status by subclassing a kind.
STATUS_BY_KIND: tuple[tuple[type[ApplicationError], int], ...] = (
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Conflict, status.HTTP_409_CONFLICT),
    (IdempotencyKeyReused, status.HTTP_422_UNPROCESSABLE_ENTITY),
    (InvalidIdempotencyKey, status.HTTP_400_BAD_REQUEST),
)


def application_error_status(exc: ApplicationError) -> int:
    """The HTTP status of an application error, from the kind it subclasses."""
    for kind, status_code in STATUS_BY_KIND:
        if isinstance(exc, kind):
            return status_code
    return status.HTTP_400_BAD_REQUEST


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn `exc` into the stable error body, or return None to let it be a 500."""
    if isinstance(exc, ApplicationError):
        set_rollback()
        return error_response(
            status_code=application_error_status(exc),
            code=exc.code,
            message=exc.message,
            details=exc.extra,
        )
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        set_rollback()
        unavailable = error_response(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            **DATABASE_UNAVAILABLE,
        )
        unavailable["Retry-After"] = str(settings.DATABASE_UNAVAILABLE_RETRY_AFTER)
        return unavailable
    if isinstance(exc, RequestDataTooBig):
        return error_response(
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            **request_too_large(),
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code, message, details = _describe(exc, response.data)
    response.data = {"error": {"code": code, "message": message, "details": details}}
    return response


def error_body(*, code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    """The one error shape of the API; config.error_views uses it outside DRF too."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    *, status_code: int, code: str, message: str, details: dict[str, Any]
) -> Response:
    """A DRF Response with the error body, for the renderer to serialise."""
    return Response(
        error_body(code=code, message=message, details=details), status=status_code
    )


def _describe(
    exc: exceptions.APIException, data: Any
) -> tuple[str, str, dict[str, Any]]:
    if isinstance(exc, exceptions.ValidationError):
        details = data if isinstance(data, dict) else {"non_field_errors": data}
        return "validation_error", "Invalid input.", details
    if isinstance(exc, exceptions.Throttled):
        # Throttled sets `wait` in __init__; the stubs do not declare it.
        wait = exc.wait  # type: ignore[attr-defined]
        return "throttled", str(exc.detail), {"wait_seconds": wait}
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return str(code), str(exc.detail), {}
