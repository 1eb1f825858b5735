"""The dead-letter admin: browse, inspect, requeue, resolve and discard stored dead letters.

Importing this module registers `DeadLetterAdmin` (events.admin, which Django's admin
autodiscovery imports, imports it). The class holds the list and detail configuration,
the permissions and the URLs; its computed columns live in admin_columns, its own
pages in admin_pages, and how a letter reads (title, times, timeline) in
presentation and timeline.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, path

from events.dead_letters.admin_columns import DeadLetterColumns
from events.dead_letters.admin_pages import DeadLetterPages
from events.dead_letters.presentation import dead_letter_title, error_summary_text
from events.dead_letters.requeue import (
    MAX_REPLAYS,
    REQUEUEABLE,
    dead_letter_discard,
    dead_letter_requeue,
    dead_letter_resolve,
)
from events.models import DeadLetter


class DeadLetterAdmin(DeadLetterPages, DeadLetterColumns):
    """Browse, inspect, requeue, resolve and discard stored dead letters.

    Viewing needs the view permission; every requeue path (actions, the buttons and
    page of one letter, "requeue everything matching") needs
    `events.requeue_deadletter` and answers 403 without it; resolve and discard (list
    actions and detail buttons) need the change permission. Nothing is edited in
    place: the detail page is read-only for everyone and refuses a form POST.
    """

    list_display = (
        "id",
        "status_badge",
        "topic_and_type",
        "key_short",
        "error_summary",
        "attempts",
        "replays",
        "last_failure",
    )
    list_filter = (
        "original_topic",
        "status",
        "error_class",
        ("last_failed_at", admin.DateFieldListFilter),
    )
    search_fields = ("event_id__exact", "key_text", "error_message", "traceback")
    date_hierarchy = None
    actions = (
        "requeue_selected",
        "requeue_selected_dry_run",
        "resolve_selected",
        "discard_selected",
    )
    change_list_template = "admin/events/deadletter/change_list.html"
    change_form_template = "admin/events/deadletter/change_form.html"
    # Fields on one line share a row, so the first screen holds the whole summary.
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("status", "status_changed"),
                    ("event_type", "event_id"),
                    ("key_text", "consumer_group"),
                    "handler",
                    ("attempts", "replay_count"),
                    ("first_failed", "last_failed"),
                )
            },
        ),
        (
            "Error",
            {"fields": ("error_class", "error_message", "traceback_pre")},
        ),
        ("Message", {"fields": ("payload_pre", "headers_pre")}),
        (
            "Where it failed",
            {
                "fields": (
                    ("original_position", "original_time"),
                    ("dlq_position", "stored"),
                )
            },
        ),
        ("Timeline", {"fields": ("timeline",)}),
    )

    REQUEUE_ACTIONS = frozenset({"requeue_selected", "requeue_selected_dry_run"})
    STATUS_ACTIONS = frozenset({"resolve_selected", "discard_selected"})

    # -- permissions ----------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: DeadLetter | None = None
    ) -> bool:
        return False

    def get_readonly_fields(
        self, request: HttpRequest, obj: DeadLetter | None = None
    ) -> list[str]:
        return [
            *(f.name for f in DeadLetter._meta.fields),
            "status_changed",
            "first_failed",
            "last_failed",
            "original_time",
            "stored",
            "original_position",
            "dlq_position",
            "traceback_pre",
            "payload_pre",
            "headers_pre",
            "timeline",
        ]

    # -- pages ----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "requeue-matching/",
                wrap(self.requeue_matching_view),
                name="events_deadletter_requeue_matching",
            ),
            path(
                "<int:pk>/requeue/",
                wrap(self.requeue_one_view),
                name="events_deadletter_requeue_one",
            ),
            path(
                "<int:pk>/resolve/",
                wrap(self.resolve_one_view),
                name="events_deadletter_resolve_one",
            ),
            path(
                "<int:pk>/discard/",
                wrap(self.discard_one_view),
                name="events_deadletter_discard_one",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, with the counts per topic and status above it."""
        # Without the permission an action is not even offered; say 403, not
        # "no action selected", to whoever posts it anyway.
        action = request.POST.get("action") if request.method == "POST" else None
        if action in self.REQUEUE_ACTIONS and not self.has_requeue_permission(request):
            raise PermissionDenied
        if action in self.STATUS_ACTIONS and not self.has_change_permission(request):
            raise PermissionDenied
        context = {
            "title": "Dead letters",
            # The app menu on the left would leave the table 600 px at 1,280; the
            # breadcrumbs lead to the same places.
            "is_nav_sidebar_enabled": False,
            "dead_letter_counts": _counts_by_topic(),
            "dead_letter_statuses": [s for s, _ in DeadLetter.Status.choices],
            "can_requeue": self.has_requeue_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Show one dead letter, with what may be done to it as buttons on top."""
        # Every field is read-only; a POST would only write the row back as read,
        # over whatever a requeue or resolve changed meanwhile.
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET"])
        context: dict[str, Any] = {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        letter = self.get_object(request, unquote(object_id))
        if letter is not None:
            can_change = self.has_change_permission(request, letter)
            context.update(
                title=dead_letter_title(letter),
                subtitle=None,
                error_line=error_summary_text(letter, limit=200)[0],
                can_requeue_this=self.has_requeue_permission(request)
                and letter.status in REQUEUEABLE,
                can_resolve_this=can_change
                and letter.status != DeadLetter.Status.RESOLVED,
                can_discard_this=can_change
                and letter.status != DeadLetter.Status.DISCARDED,
                replay_cap_reached=letter.replay_count >= MAX_REPLAYS,
                max_replays=MAX_REPLAYS,
            )
        return super().change_view(
            request, object_id, form_url, {**context, **(extra_context or {})}
        )

    def resolve_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Mark one dead letter resolved (the detail page's button); POST only."""
        return self.set_status_view(request, pk, dead_letter_resolve, "resolved")

    def discard_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Mark one dead letter discarded (the detail page's button); POST only."""
        return self.set_status_view(request, pk, dead_letter_discard, "discarded")

    # -- actions --------------------------------------------------------------------

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> None:
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        self.report_requeue(
            request, dead_letter_requeue(dead_letters=queryset, user=request.user)
        )

    @admin.action(
        description="Dry run: show what requeueing would send",
        permissions=["requeue"],
    )
    def requeue_selected_dry_run(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> HttpResponse:
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        results = dead_letter_requeue(
            dead_letters=queryset, user=request.user, dry_run=True
        )
        return self.dry_run_page(request, results)

    @admin.action(description="Mark selected as resolved", permissions=["change"])
    def resolve_selected(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> None:
        n = dead_letter_resolve(dead_letters=queryset, user=request.user)
        self.message_user(request, f"{n} dead letter(s) resolved.", messages.SUCCESS)

    @admin.action(description="Discard selected", permissions=["change"])
    def discard_selected(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> None:
        n = dead_letter_discard(dead_letters=queryset, user=request.user)
        self.message_user(request, f"{n} dead letter(s) discarded.", messages.SUCCESS)


def _counts_by_topic() -> list[tuple[str, list[int], int]]:
    """(original topic, count per status in Status order, total) for the list's head."""
    counts = (
        DeadLetter.objects.values("original_topic", "status")
        .annotate(n=Count("id"))
        .order_by("original_topic", "status")
    )
    by_topic: dict[str, dict[str, int]] = {}
    for row in counts:
        by_topic.setdefault(row["original_topic"], {})[row["status"]] = row["n"]
    statuses = [s for s, _ in DeadLetter.Status.choices]
    return [
        (topic, [per.get(s, 0) for s in statuses], sum(per.values()))
        for topic, per in by_topic.items()
    ]


admin.site.register(DeadLetter, DeadLetterAdmin)
