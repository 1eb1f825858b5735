from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from events.models import InboxEntry, OutboxEvent


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("pending", "pending"), ("sent", "sent"), ("parked", "parked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "pending":
            return queryset.filter(sent_at__isnull=True, parked_at__isnull=True)
        if self.value() == "sent":
            return queryset.filter(sent_at__isnull=False)
        if self.value() == "parked":
            return queryset.filter(parked_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "topic",
        "key",
        "state",
        "created_at",
        "sent_at",
        "partition",
        "offset",
    )
    list_filter = (OutboxStateFilter, "event_type", "topic")
    search_fields = ("event_id", "key", "aggregate_id", "last_error")
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]
    actions = ("republish",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Re-publish selected parked events", permissions=["change"]
    )
    def republish(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(parked_at__isnull=False).update(
            parked_at=None, sent_at=None, last_error=""
        )
        self.message_user(
            request,
            f"{count} parked event(s) queued for the relay again.",
            messages.SUCCESS,
        )


@admin.register(InboxEntry)
class InboxEntryAdmin(admin.ModelAdmin):
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
