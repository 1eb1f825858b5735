"""The read-only admin base class both apps use, and the idempotency records' admin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from http_api.models import IdempotencyRecord

if TYPE_CHECKING:
    # ModelAdmin is generic only in django-stubs; at run time it cannot be subscripted.
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(_ModelAdmin):
    """Browse and search only; changes go through the services.

    For rows whose only writers are services (state, money, stored responses): an
    edit in the admin would skip their row locks, their ledger and their events.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "scope", "key", "response_status", "created_at")
    list_filter = ("scope", "response_status")
    search_fields = ("key", "user__username")
    list_select_related = ("user",)
