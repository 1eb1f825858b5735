"""The API's one exception handler: every error leaves as the same JSON body.

    {"error": {"code": "seat_unavailable", "message": "...", "details": {...}}}

Settings: REST_FRAMEWORK["EXCEPTION_HANDLER"] =
"reservations.api_errors.api_exception_handler".
ApplicationError codes map to HTTP statuses here, so services never speak HTTP.
Anything not handled here stays a 500, which Django logs.
"""

from __future__ import annotations

import logging
from typing import Any

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

from reservations.errors import ApplicationError

logger = logging.getLogger(__name__)

# The database is down, restarting, refused the connection, or the process's pool had
# no free connection in time (psycopg_pool.PoolTimeout, which Django wraps in
# OperationalError): worth retrying, so a 503 with Retry-After, not a 500.
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE = {
    "code": "database_unavailable",
    "message": "The database is unavailable or busy; retry after the time given in "
    "the Retry-After header.",
    "details": {},
}


def request_too_large() -> dict[str, Any]:
    """The 413 body's fields; the limit is Django's DATA_UPLOAD_MAX_MEMORY_SIZE."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return {
        "code": "request_too_large",
        "message": f"The request body is larger than the limit of {limit} bytes.",
        "details": {"max_bytes": limit},
    }


STATUS_BY_CODE: dict[str, int] = {
    "not_found": status.HTTP_404_NOT_FOUND,
    "seat_unavailable": status.HTTP_409_CONFLICT,
    "already_paid": status.HTTP_409_CONFLICT,
    "insufficient_balance": status.HTTP_409_CONFLICT,
    "hold_expired": status.HTTP_409_CONFLICT,
    "invalid_state": status.HTTP_409_CONFLICT,
    "idempotency_key_reused": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "invalid_idempotency_key": status.HTTP_400_BAD_REQUEST,
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn `exc` into the stable error body, or return None to let it be a 500."""
    if isinstance(exc, ApplicationError):
        set_rollback()
        return error_response(
            status_code=STATUS_BY_CODE.get(exc.code, status.HTTP_400_BAD_REQUEST),
            code=exc.code,
            message=exc.message,
            details=exc.extra,
        )
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        set_rollback()
        response = error_response(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            **DATABASE_UNAVAILABLE,
        )
        response["Retry-After"] = str(settings.DATABASE_UNAVAILABLE_RETRY_AFTER)
        return response
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
        return "throttled", str(exc.detail), {"wait_seconds": exc.wait}
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return str(code), str(exc.detail), {}
