"""Throttling of write endpoints (scope "writes")."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle


class ReadRatesWhenAsked:
    """Mixin for a DRF throttle: read the rates when asked, not at import time.

    DRF copies DEFAULT_THROTTLE_RATES into a class attribute on import, so a changed
    setting (another environment, a test) would be ignored.
    """

    @property
    def THROTTLE_RATES(self) -> dict[str, str | None]:  # noqa: N802 - DRF's name
        return api_settings.DEFAULT_THROTTLE_RATES


class WriteRateThrottle(ReadRatesWhenAsked, ScopedRateThrottle):
    """ScopedRateThrottle for the "writes" scope, per user."""


class WritesThrottleMixin:
    """Mix into a write view to throttle it per user under the "writes" rate."""

    throttle_classes = [WriteRateThrottle]
    throttle_scope = "writes"
