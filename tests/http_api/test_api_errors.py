"""The exception handler gives every error the same body and the right status.

The apps' errors are here too: their status comes from the kernel kind they
subclass, so a domain error in the wrong kind would change a status these pin.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions

from http_api import errors as kernel_errors
from http_api.api_errors import api_exception_handler
from payments import errors as payments_errors
from reservations import errors as reservations_errors


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (kernel_errors.NotFound(), 404, "not_found"),
        (reservations_errors.SeatUnavailable(), 409, "seat_unavailable"),
        (reservations_errors.AlreadyPaid(), 409, "already_paid"),
        (payments_errors.InsufficientBalance(), 409, "insufficient_balance"),
        (reservations_errors.HoldExpired(), 409, "hold_expired"),
        (reservations_errors.InvalidState(), 409, "invalid_state"),
        (kernel_errors.IdempotencyKeyReused(), 422, "idempotency_key_reused"),
        (kernel_errors.InvalidIdempotencyKey(), 400, "invalid_idempotency_key"),
        (kernel_errors.ApplicationError("generic"), 400, "application_error"),
        (exceptions.NotAuthenticated(), 401, "not_authenticated"),
        (exceptions.PermissionDenied(), 403, "permission_denied"),
        (exceptions.MethodNotAllowed("PUT"), 405, "method_not_allowed"),
        (exceptions.Throttled(wait=3), 429, "throttled"),
        (Http404(), 404, "not_found"),
        (DjangoPermissionDenied(), 403, "permission_denied"),
        (DjangoValidationError("bad"), 400, "validation_error"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_errors_map_to_a_status_and_a_stable_code(exc, status, code):
    response = api_exception_handler(exc, {})

    assert response.status_code == status
    assert set(response.data) == {"error"}
    assert set(response.data["error"]) == {"code", "message", "details"}
    assert response.data["error"]["code"] == code


def test_application_error_details_carry_its_extra():
    exc = reservations_errors.SeatUnavailable("Taken.", extra={"seat_id": 7})

    body = api_exception_handler(exc, {}).data["error"]

    assert body == {
        "code": "seat_unavailable",
        "message": "Taken.",
        "details": {"seat_id": 7},
    }


def test_field_errors_are_the_details_of_a_validation_error():
    exc = exceptions.ValidationError({"seat_id": ["This field is required."]})

    body = api_exception_handler(exc, {}).data["error"]

    assert body["details"] == {"seat_id": ["This field is required."]}


def test_unknown_exceptions_are_left_to_become_500s():
    assert api_exception_handler(RuntimeError("bug"), {}) is None
