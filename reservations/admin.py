"""Admin for the catalog and reservations.

Catalog rows are editable. State rows (reservations, tickets, notifications) are
read-only here (`http_api.admin.ReadOnlyAdmin`): services are their only writers, and
an edit that bypassed them would skip the row locks and the events.
"""

from __future__ import annotations

from django.contrib import admin

from http_api.admin import ReadOnlyAdmin
from reservations.models import (
    Concert,
    Notification,
    Performance,
    Reservation,
    Seat,
    Ticket,
)


class PerformanceInline(admin.TabularInline):
    model = Performance
    extra = 0


@admin.register(Concert)
class ConcertAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "artist", "created_at")
    search_fields = ("title", "artist")
    list_filter = ("created_at",)
    inlines = [PerformanceInline]


@admin.register(Performance)
class PerformanceAdmin(admin.ModelAdmin):
    list_display = ("id", "concert", "venue", "starts_at")
    list_filter = ("venue", "starts_at")
    search_fields = ("concert__title", "venue")
    list_select_related = ("concert",)
    date_hierarchy = "starts_at"


@admin.register(Seat)
class SeatAdmin(admin.ModelAdmin):
    list_display = ("id", "performance", "number", "grade", "price", "status")
    list_filter = ("status", "grade", "performance__concert")
    search_fields = ("number", "performance__concert__title", "performance__venue")
    list_select_related = ("performance__concert",)
    # The state is the services' business (HELD/SOLD must match a reservation).
    readonly_fields = ("status",)


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "seat",
        "status",
        "price",
        "hold_expires_at",
        "paid_at",
        "created_at",
    )
    list_filter = ("status", "seat__grade", "seat__performance__concert")
    search_fields = ("id", "user__username", "user__email", "seat__number")
    list_select_related = ("user", "seat")
    date_hierarchy = "created_at"


@admin.register(Ticket)
class TicketAdmin(ReadOnlyAdmin):
    list_display = ("code", "reservation", "user", "issued_at")
    list_filter = ("issued_at",)
    search_fields = ("code", "user__username", "reservation__id")
    list_select_related = ("reservation", "user")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "kind", "short_message", "created_at", "read_at")
    list_filter = ("kind", "created_at")
    search_fields = ("user__username", "message", "event_id")
    list_select_related = ("user",)

    @admin.display(description="message")
    def short_message(self, obj: Notification) -> str:
        return obj.message if len(obj.message) <= 60 else obj.message[:57] + "..."
