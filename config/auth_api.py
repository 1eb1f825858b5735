"""Logging in to the API: username and password for a token (POST /api/auth/token/).

Session login for the browsable API is DRF's own (/api/auth/login/, /api/auth/logout/).
The token endpoint is throttled per client address ("auth" rate) and answers bad
credentials with the API's error body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from http_api.api_schema import error_responses
from http_api.throttling import ReadRatesWhenAsked

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def auth_token_issue(*, user: User) -> Token:
    """The user's API token, created on first use; the same key on every login."""
    with transaction.atomic():
        token, _created = Token.objects.get_or_create(user=user)
    return token


class AuthRateThrottle(ReadRatesWhenAsked, ScopedRateThrottle):
    pass


class AuthTokenCreateApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AuthRateThrottle]
    throttle_scope = "auth"

    class InputSerializer(AuthTokenSerializer):
        # DRF's serializer also declares the output; ours is below. None removes a
        # declared field (DRF's own idiom), which the stubs do not model.
        token = None  # type: ignore[assignment]

        class Meta:
            ref_name = "AuthTokenInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(
            help_text="Send it as 'Authorization: Token <token>' (or 'Bearer <token>')."
        )

        class Meta:
            ref_name = "AuthToken"

    @extend_schema(
        operation_id="auth_token_create",
        tags=["auth"],
        summary="Get an API token",
        description="Exchange a username and password for the user's API token. "
        "Throttled per client address.",
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(400, 429)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        token = auth_token_issue(user=serializer.validated_data["user"])
        return Response(self.OutputSerializer({"token": token.key}).data)
