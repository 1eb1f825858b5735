"""The API's one exception handler: every error leaves as the same JSON body.

    {"error": {"code": "seat_unavailable", "message": "...", "details": {...}}}

Settings: REST_FRAMEWORK["EXCEPTION_HANDLER"] =
"reservations.api_errors.api_exception_handler".
ApplicationError codes map to HTTP statuses here, so services never speak HTTP.
Anything not handled here stays a 500, which Django logs.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from reservations.errors import ApplicationError

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


def error_response(
    *, status_code: int, code: str, message: str, details: dict[str, Any]
) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details}},
        status=status_code,
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
