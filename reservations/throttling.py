"""Throttling of write endpoints (scope "writes")."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

logger = logging.getLogger(__name__)
# What Django's Redis cache raises when Redis is down or refuses.
CACHE_ERRORS = (RedisError, ConnectionError, OSError)


class ReadRatesWhenAsked:
    """Mixin for a DRF throttle: read the rates when asked, not at import time; let
    requests through while the cache (Redis) is unreachable.

    DRF copies DEFAULT_THROTTLE_RATES into a class attribute on import, so a changed
    setting (another environment, a test) would be ignored. A throttle is a brake,
    not a lock: with Redis down, refusing every write would turn a cache outage into
    an outage of the API.
    """

    @property
    def THROTTLE_RATES(self) -> dict[str, str | None]:  # noqa: N802 - DRF's name
        return api_settings.DEFAULT_THROTTLE_RATES

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except CACHE_ERRORS as exc:
            logger.warning("throttle cache unavailable, not throttling: %s", exc)
            return True


class WriteRateThrottle(ReadRatesWhenAsked, ScopedRateThrottle):
    """ScopedRateThrottle for the "writes" scope, per user."""


class WritesThrottleMixin:
    """Mix into a write view to throttle it per user under the "writes" rate."""

    throttle_classes = [WriteRateThrottle]
    throttle_scope = "writes"
