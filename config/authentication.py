"""API authentication: DRF tokens sent as `Token <key>` or `Bearer <key>`.

Any other scheme in the Authorization header (Basic, Digest, ...) is refused with a
401 that says what to send, instead of DRF's "credentials were not provided", which
is false when credentials were sent.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.request import Request

ACCEPTED_SCHEMES = ("token", "bearer")
UNSUPPORTED_SCHEME_MESSAGE = _(
    "Unsupported authentication scheme '%(scheme)s'. Send 'Authorization: Token "
    "<key>' (or 'Bearer <key>'); get a key from POST /api/auth/token/ with your "
    "username and password, or log in at /api/auth/login/ for a session."
)


class TokenOrBearerAuthentication(TokenAuthentication):
    """DRF's token authentication, under either keyword; other schemes get a 401."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        scheme = header[0].decode("latin-1")
        if scheme.lower() not in ACCEPTED_SCHEMES:
            raise exceptions.AuthenticationFailed(
                UNSUPPORTED_SCHEME_MESSAGE % {"scheme": scheme[:20]},
                code="unsupported_authentication_scheme",
            )
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header: send '%(scheme)s <key>'.")
                % {"scheme": scheme[:20]}
            )
        try:
            key = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header: the key has invalid characters.")
            ) from exc
        return self.authenticate_credentials(key)
