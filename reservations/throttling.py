"""Throttling of write endpoints (scope "writes")."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle


class WriteRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle that reads its rate when asked, not at import time.

    DRF copies DEFAULT_THROTTLE_RATES into a class attribute on import, so a changed
    setting (another environment, a test) would be ignored.
    """

    @property  # type: ignore[override]
    def THROTTLE_RATES(self) -> dict[str, str | None]:  # noqa: N802 - DRF's name
        return api_settings.DEFAULT_THROTTLE_RATES


class WritesThrottleMixin:
    """Mix into a write view to throttle it per user under the "writes" rate."""

    throttle_classes = [WriteRateThrottle]
    throttle_scope = "writes"
