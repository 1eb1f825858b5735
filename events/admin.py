"""Admin pages of the pipeline's tables: outbox, published log, inbox, failed attempts.

The dead-letter pages are the dead-letter product's (events.dead_letters.admin); they
register when this module, which Django's admin autodiscovery imports, imports them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
)
from django.utils.html import format_html

import events.dead_letters.admin  # noqa: F401 - registers DeadLetterAdmin
from events.core.outbox import unpark
from events.models import (
    FailedAttempt,
    InboxEntry,
    OutboxEvent,
    PublishedEvent,
)

if TYPE_CHECKING:
    # ModelAdmin is generic only in django-stubs.
    _OutboxEventAdmin = admin.ModelAdmin[OutboxEvent]
    _PublishedEventAdmin = admin.ModelAdmin[PublishedEvent]
    _InboxEntryAdmin = admin.ModelAdmin[InboxEntry]
    _FailedAttemptAdmin = admin.ModelAdmin[FailedAttempt]
else:
    _OutboxEventAdmin = _PublishedEventAdmin = admin.ModelAdmin
    _InboxEntryAdmin = _FailedAttemptAdmin = admin.ModelAdmin


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("pending", "pending"), ("parked", "parked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "pending":
            return queryset.filter(parked_at__isnull=True)
        if self.value() == "parked":
            return queryset.filter(parked_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(_OutboxEventAdmin):
    """The backlog (pending rows) and the parked rows the broker refused."""

    list_display = (
        "id",
        "event_type",
        "topic",
        "key",
        "state",
        "created_at",
        "parked_at",
        "last_error",
    )
    list_filter = (OutboxStateFilter, "event_type", "topic")
    search_fields = ("event_id", "key", "aggregate_id", "last_error")
    # The payload column is text holding JSON; shown pretty-printed, not as a dict.
    readonly_fields = tuple(
        "payload_json" if f.name == "payload" else f.name
        for f in OutboxEvent._meta.fields
    )
    fields = readonly_fields
    actions = ("republish",)

    @admin.display(description="payload")
    def payload_json(self, obj: OutboxEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Re-publish selected parked events", permissions=["change"]
    )
    def republish(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = unpark(queryset)
        self.message_user(
            request,
            f"{count} parked event(s) handed to the relay again.",
            messages.SUCCESS,
        )


@admin.register(PublishedEvent)
class PublishedEventAdmin(_PublishedEventAdmin):
    """Where each acknowledged event landed: topic, partition, offset."""

    list_display = (
        "event_id",
        "event_type",
        "topic",
        "partition",
        "offset",
        "key",
        "created_at",
        "sent_at",
    )
    list_filter = ("event_type", "topic")
    search_fields = ("event_id", "key", "aggregate_id")
    readonly_fields = [f.name for f in PublishedEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: PublishedEvent | None = None
    ) -> bool:
        return False


@admin.register(InboxEntry)
class InboxEntryAdmin(_InboxEntryAdmin):
    list_display = (
        "event_id",
        "handler",
        "topic",
        "partition",
        "offset",
        "processed_at",
    )
    list_filter = ("handler", "topic")
    search_fields = ("event_id",)
    readonly_fields = [f.name for f in InboxEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(FailedAttempt)
class FailedAttemptAdmin(_FailedAttemptAdmin):
    list_display = (
        "event_id",
        "handler",
        "attempt",
        "outcome",
        "exception_class",
        "topic",
        "failed_at",
    )
    list_filter = ("outcome", "handler", "exception_class")
    search_fields = ("event_id", "message")
    readonly_fields = [f.name for f in FailedAttempt._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
