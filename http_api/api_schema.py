"""OpenAPI pieces every view shares: the error body, error responses, the key header.

Both apps' views document their errors with these, so the schema has one `Error`
component and one description per status, whichever app a view belongs to.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from http_api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN, MAX_KEY_LENGTH


# No docstrings on these two: drf-spectacular would publish them as the components'
# descriptions. ErrorBody is the `error` object of `http_api.api_errors.error_body`.
class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.DictField(
        child=serializers.JSONField(),
        help_text="Field errors for validation_error; ids and states otherwise.",
    )

    class Meta:
        ref_name = "ErrorBody"


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorBodySerializer()

    class Meta:
        ref_name = "Error"


# The 409 line names the codes of the apps' `Conflict` errors (reservations.errors,
# payments.errors) as text, so the kernel imports neither; tests/http_api checks that
# it names every one.
_DESCRIPTIONS = {
    400: "Invalid input (code validation_error, invalid_idempotency_key, ...).",
    401: "Not authenticated.",
    403: "Not allowed (also returned instead of 401 for session clients).",
    404: "Not found, not yours, or a page past the end of a list.",
    409: "Conflict: seat_unavailable, already_paid, insufficient_balance, "
    "hold_expired or invalid_state.",
    422: "idempotency_key_reused: the Idempotency-Key was used with another request.",
    429: "throttled: too many write requests.",
}


def error_responses(*status_codes: int) -> dict[int, OpenApiResponse]:
    """Document the error statuses a view returns, all with the ErrorSerializer."""
    return {
        code: OpenApiResponse(response=ErrorSerializer, description=_DESCRIPTIONS[code])
        for code in status_codes
    }


AUTH_ERRORS = (401, 403)
WRITE_ERRORS = (400, 401, 403, 404, 409, 422, 429)

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=IDEMPOTENCY_HEADER,
    # The same pattern the view validates with (http_api.idempotency).
    type={
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        f"A unique key (1-{MAX_KEY_LENGTH} visible ASCII characters or spaces) per "
        "intended operation; any other key is a 400 invalid_idempotency_key. "
        "Repeating a request with the same key returns the stored response without "
        "doing the work again; reusing it with a different request returns 422."
    ),
)
