"""The request type of views behind IsAuthenticated, for the type checker.

DRF types `Request.user` as a user or AnonymousUser. Behind the API's default
permission class (IsAuthenticated) a view only ever sees a signed-in User, so views
that pass `request.user` on annotate their `request` argument, and the `request`
attribute that `get_queryset` reads, with `AuthenticatedRequest`. At run time it is
DRF's `Request` itself: nothing is checked or converted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    class AuthenticatedRequest(Request):
        user: User

else:
    AuthenticatedRequest = Request

__all__ = ["AuthenticatedRequest"]
