"""Admin for wallets, their ledger and payments: read-only.

Money moves only through `payments.services`, which keep balance and ledger in step
and publish the events; the admin is for looking things up.
"""

from __future__ import annotations

from django.contrib import admin

from http_api.admin import ReadOnlyAdmin
from payments.models import Payment, Wallet, WalletTransaction


class WalletTransactionInline(admin.TabularInline):
    model = WalletTransaction
    fields = ("created_at", "kind", "amount", "balance_after", "payment")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "balance", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    inlines = [WalletTransactionInline]


@admin.register(WalletTransaction)
class WalletTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "wallet", "kind", "amount", "balance_after", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("wallet__user__username", "payment__id")
    list_select_related = ("wallet__user",)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "reservation", "amount", "created_at")
    list_filter = ("created_at",)
    search_fields = ("id", "user__username", "reservation__id")
    list_select_related = ("user", "reservation")
    date_hierarchy = "created_at"
