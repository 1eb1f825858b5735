"""The application error type that services raise, and the cases the kernel knows.

Services speak in domain terms (a seat is taken, a wallet is short); the API layer
(`http_api.api_errors`) turns the error into an HTTP status, so services never speak
HTTP. An app's own errors subclass one of the kinds here (`NotFound`, `Conflict`, or
`ApplicationError` itself for a plain 400) and keep a stable `code`; subclasses exist
so callers and tests can catch one case without comparing strings.
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
    """The object does not exist, or is not the caller's (the API does not say which)."""

    code = "not_found"
    default_message = "Not found."


class Conflict(ApplicationError):
    """The request is well formed but the current state refuses it (a 409).

    Abstract in use: apps raise a subclass with a code of their own, and name that
    code in the 409 description of `http_api.api_schema`.
    """

    code = "conflict"
    default_message = "The request conflicts with the current state."


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    default_message = (
        "The Idempotency-Key header must be 1 to 255 visible ASCII characters or "
        "spaces."
    )
