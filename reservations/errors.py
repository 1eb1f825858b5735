"""The one application error type that services raise, and its named cases.

Services speak in domain terms (a seat is taken, a wallet is short); the API layer
(`reservations.api_errors`) turns the stable `code` into an HTTP status. Subclasses
exist so callers and tests can catch one case without comparing strings.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A business rule refused the request; `code` is stable, `message` human."""

    code: str = "application_error"
    default_message: str = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        self.extra = extra or {}
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class NotFound(ApplicationError):
    code = "not_found"
    default_message = "Not found."


class SeatUnavailable(ApplicationError):
    code = "seat_unavailable"
    default_message = "The seat is not available."


class AlreadyPaid(ApplicationError):
    code = "already_paid"
    default_message = "The reservation is already paid."


class InsufficientBalance(ApplicationError):
    code = "insufficient_balance"
    default_message = "The wallet balance is too low."


class HoldExpired(ApplicationError):
    code = "hold_expired"
    default_message = "The seat hold has expired."


class InvalidState(ApplicationError):
    code = "invalid_state"
    default_message = "The reservation is not in a state that allows this."


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    default_message = (
        "The Idempotency-Key header must be 1 to 255 visible ASCII characters or "
        "spaces."
    )
