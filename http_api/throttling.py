"""Throttling: the "writes" scope of both apps' write endpoints, and the base that
makes any scoped throttle read its rates when asked (config.auth_api's "auth" too)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import (
    BaseThrottle,
    ScopedRateThrottle,
    SimpleRateThrottle,
)
from rest_framework.views import APIView

logger = logging.getLogger(__name__)
# What Django's Redis cache raises when Redis is down or refuses.
CACHE_ERRORS = (RedisError, ConnectionError, OSError)


class ReadRatesWhenAsked(SimpleRateThrottle):
    """Mixin for a DRF rate throttle: read the rates when asked, not at import time;
    let requests through while the cache (Redis) is unreachable.

    DRF copies DEFAULT_THROTTLE_RATES into a class attribute on import, so a changed
    setting (another environment, a test) would be ignored. A throttle is a brake,
    not a lock: with Redis down, refusing every write would turn a cache outage into
    an outage of the API. Put it before the throttle class it changes
    (`class T(ReadRatesWhenAsked, ScopedRateThrottle)`).
    """

    def get_rate(self) -> str | None:
        # The stubs type the rates as numbers; they are "N/period" strings.
        self.THROTTLE_RATES = cast(
            "dict[str, str | None]", api_settings.DEFAULT_THROTTLE_RATES
        )
        return super().get_rate()

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as exc:
            logger.warning("throttle cache unavailable, not throttling: %s", exc)
            return True


class WriteRateThrottle(ReadRatesWhenAsked, ScopedRateThrottle):
    """ScopedRateThrottle for the "writes" scope, per user."""


class WritesThrottleMixin:
    """Mix into a write view to throttle it per user under the "writes" rate."""

    throttle_classes: Sequence[type[BaseThrottle]] = [WriteRateThrottle]
    throttle_scope: str = "writes"
