import json

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from events.models import (
    DeadLetter,
    FailedAttempt,
    InboxEntry,
    OutboxEvent,
    PublishedEvent,
)
from events.requeue import dead_letter_discard, dead_letter_requeue, dead_letter_resolve


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("pending", "pending"), ("parked", "parked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "pending":
            return queryset.filter(parked_at__isnull=True)
        if self.value() == "parked":
            return queryset.filter(parked_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
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
    readonly_fields = fields = [
        "payload_json" if f.name == "payload" else f.name
        for f in OutboxEvent._meta.fields
    ]
    actions = ("republish",)

    @admin.display(description="payload")
    def payload_json(self, obj: OutboxEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Re-publish selected parked events", permissions=["change"]
    )
    def republish(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(parked_at__isnull=False).update(
            parked_at=None, last_error=""
        )
        self.message_user(
            request,
            f"{count} parked event(s) handed to the relay again.",
            messages.SUCCESS,
        )


@admin.register(PublishedEvent)
class PublishedEventAdmin(admin.ModelAdmin):
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

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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


@admin.register(FailedAttempt)
class FailedAttemptAdmin(admin.ModelAdmin):
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


class DeadLetterAdmin(admin.ModelAdmin):
    """Browse, inspect, requeue, resolve and discard stored dead letters.

    Viewing needs the view permission; every requeue path (actions, the per-letter
    page, "requeue everything matching") needs `events.requeue_deadletter` and answers
    403 without it; resolve and discard need the change permission.
    """

    list_display = (
        "id",
        "status",
        "original_topic",
        "event_type",
        "event_id",
        "key_text",
        "error_class",
        "attempts",
        "replay_count",
        "last_failed_at",
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
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status",
                    "status_changed_at",
                    "event_id",
                    "event_type",
                    "key_text",
                    "handler",
                    "consumer_group",
                    "attempts",
                    "replay_count",
                    "first_failed_at",
                    "last_failed_at",
                )
            },
        ),
        (
            "Where it failed",
            {
                "fields": (
                    "original_topic",
                    "original_partition",
                    "original_offset",
                    "original_timestamp",
                    "dlq_topic",
                    "dlq_partition",
                    "dlq_offset",
                    "stored_at",
                )
            },
        ),
        (
            "Error",
            {"fields": ("error_class", "error_message", "traceback_pre")},
        ),
        ("Message", {"fields": ("payload_pre", "headers_pre")}),
        ("Timeline", {"fields": ("timeline",)}),
    )

    REQUEUE_ACTIONS = frozenset({"requeue_selected", "requeue_selected_dry_run"})
    STATUS_ACTIONS = frozenset({"resolve_selected", "discard_selected"})

    # -- permissions ----------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.requeue_deadletter")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list:
        return [
            *(f.name for f in DeadLetter._meta.fields),
            "traceback_pre",
            "payload_pre",
            "headers_pre",
            "timeline",
        ]

    # -- pages ----------------------------------------------------------------------

    def get_urls(self) -> list:
        from django.urls import path

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
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        # Without the permission an action is not even offered; say 403, not
        # "no action selected", to whoever posts it anyway.
        action = request.POST.get("action") if request.method == "POST" else None
        if action in self.REQUEUE_ACTIONS and not self.has_requeue_permission(request):
            raise PermissionDenied
        if action in self.STATUS_ACTIONS and not self.has_change_permission(request):
            raise PermissionDenied
        counts = (
            DeadLetter.objects.values("original_topic", "status")
            .annotate(n=Count("id"))
            .order_by("original_topic", "status")
        )
        by_topic: dict[str, dict[str, int]] = {}
        for row in counts:
            by_topic.setdefault(row["original_topic"], {})[row["status"]] = row["n"]
        statuses = [s for s, _ in DeadLetter.Status.choices]
        context = {
            "dead_letter_counts": [
                (topic, [per.get(s, 0) for s in statuses], sum(per.values()))
                for topic, per in by_topic.items()
            ],
            "dead_letter_statuses": statuses,
            "can_requeue": self.has_requeue_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def requeue_matching_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm (with the count), then requeue every dead letter the filter shows."""
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        query = request.GET.copy()
        # The changelist reads its filters from GET; keep ours out of them.
        for name in ("confirm", "dry_run"):
            query.pop(name, None)
        request.GET = query
        try:
            changelist = self.get_changelist_instance(request)
            queryset = changelist.get_queryset(request)
            count = queryset.count()
        except IncorrectLookupParameters as exc:
            # A hand-edited or stale URL: say so rather than fail with a 500, and
            # requeue nothing (an ignored filter would mean "requeue everything").
            return HttpResponseBadRequest(
                f"This filter is not valid, so nothing was requeued: {exc}. "
                "Choose the filter again on the dead-letter list.",
                content_type="text/plain",
            )
        if request.method == "POST":
            dry_run = bool(request.POST.get("dry_run"))
            results = dead_letter_requeue(
                dead_letters=list(queryset), user=request.user, dry_run=dry_run
            )
            if dry_run:
                return self._dry_run_page(request, results)
            self._report(request, results)
            return redirect(
                reverse("admin:events_deadletter_changelist") + "?" + query.urlencode()
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Requeue dead letters matching the filter",
            "count": count,
            "query": query.urlencode(),
            "statuses": sorted(set(queryset.values_list("status", flat=True))),
        }
        return TemplateResponse(
            request, "admin/events/deadletter/requeue_matching.html", context
        )

    def requeue_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Requeue one dead letter, optionally with an edited payload or as a dry run."""
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        letter = get_object_or_404(DeadLetter, pk=pk)
        original = (
            json.dumps(letter.payload, indent=2, sort_keys=True)
            if letter.payload is not None
            else ""
        )
        error = ""
        if request.method == "POST":
            text = request.POST.get("payload", "")
            override = None
            if text.strip() and text.strip() != original.strip():
                try:
                    override = json.loads(text)
                except ValueError as exc:
                    error = f"the payload is not valid JSON: {exc}"
            if not error:
                results = dead_letter_requeue(
                    dead_letters=[letter],
                    user=request.user,
                    dry_run=bool(request.POST.get("dry_run")),
                    payload_override=override,
                )
                if request.POST.get("dry_run"):
                    return self._dry_run_page(request, results)
                self._report(request, results)
                return redirect(
                    reverse("admin:events_deadletter_change", args=[letter.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Requeue dead letter {letter.pk}",
            "letter": letter,
            "payload": request.POST.get("payload", original),
            "error": error,
        }
        return TemplateResponse(
            request, "admin/events/deadletter/requeue_one.html", context
        )

    def _dry_run_page(self, request: HttpRequest, results: list) -> HttpResponse:
        rows = [
            {
                "result": r,
                "key": (r.key or b"").decode("utf-8", "replace"),
                "value": _pretty_bytes(r.value),
                "headers": [
                    (k, (v or b"").decode("utf-8", "replace")) for k, v in r.headers
                ],
            }
            for r in results
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Dry run: what a requeue would send",
            "rows": rows,
        }
        return TemplateResponse(
            request, "admin/events/deadletter/dry_run.html", context
        )

    # -- actions --------------------------------------------------------------------

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        self._report(
            request, dead_letter_requeue(dead_letters=queryset, user=request.user)
        )

    @admin.action(
        description="Dry run: show what requeueing would send",
        permissions=["requeue"],
    )
    def requeue_selected_dry_run(
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponse:
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        results = dead_letter_requeue(
            dead_letters=queryset, user=request.user, dry_run=True
        )
        return self._dry_run_page(request, results)

    @admin.action(description="Mark selected as resolved", permissions=["change"])
    def resolve_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        n = dead_letter_resolve(dead_letters=queryset, user=request.user)
        self.message_user(request, f"{n} dead letter(s) resolved.", messages.SUCCESS)

    @admin.action(description="Discard selected", permissions=["change"])
    def discard_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        n = dead_letter_discard(dead_letters=queryset, user=request.user)
        self.message_user(request, f"{n} dead letter(s) discarded.", messages.SUCCESS)

    def _report(self, request: HttpRequest, results: list) -> None:
        by_outcome: dict[str, int] = {}
        for r in results:
            by_outcome[r.outcome] = by_outcome.get(r.outcome, 0) + 1
        summary = ", ".join(f"{n} {o}" for o, n in sorted(by_outcome.items()))
        self.message_user(
            request,
            f"Requeue: {summary or 'nothing selected'}.",
            messages.SUCCESS if set(by_outcome) <= {"sent"} else messages.WARNING,
        )
        for r in results:
            if r.error:
                self.message_user(request, r.describe(), messages.ERROR)

    # -- detail fields --------------------------------------------------------------

    @admin.display(description="traceback")
    def traceback_pre(self, obj: DeadLetter) -> str:
        return format_html("<pre>{}</pre>", obj.traceback or "-")

    @admin.display(description="payload")
    def payload_pre(self, obj: DeadLetter) -> str:
        if obj.payload is None:
            return format_html("<pre>{}</pre>", _pretty_bytes(obj.value))
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True)
        )

    @admin.display(description="headers")
    def headers_pre(self, obj: DeadLetter) -> str:
        return format_html(
            "<pre>{}</pre>",
            "\n".join(f"{name}: {value}" for name, value in obj.headers or []),
        )

    @admin.display(description="timeline")
    def timeline(self, obj: DeadLetter) -> str:
        rows = dead_letter_timeline(obj)
        links = ""
        if obj.pk:
            links = format_html(
                '<p><a class="button" href="{}">Requeue (edit payload, dry run)…</a></p>',
                reverse("admin:events_deadletter_requeue_one", args=[obj.pk]),
            )
        return links + format_html(
            "<table><thead><tr><th>when</th><th>what</th><th>detail</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3], what, detail)
                    for when, what, detail in rows
                ),
            ),
        )


def dead_letter_timeline(letter: DeadLetter) -> list[tuple]:
    """The event's life in time order: outbox, publish, failures, DLQ, requeues, inbox."""
    items: list[tuple] = []
    if letter.event_id is not None:
        eid = letter.event_id
        for o in OutboxEvent.objects.filter(event_id=eid):
            items.append((o.created_at, "outbox", f"{o.state} for {o.topic}"))
        for p in PublishedEvent.objects.filter(event_id=eid):
            items.append((p.created_at, "committed", f"outbox row {p.outbox_id}"))
            items.append(
                (p.sent_at, "published", f"{p.topic}[{p.partition}]@{p.offset}")
            )
        for f in FailedAttempt.objects.filter(event_id=eid).order_by("failed_at"):
            items.append(
                (
                    f.failed_at,
                    f"failed attempt {f.attempt}",
                    f"{f.handler}: {f.exception_class}: {f.message[:200]} "
                    f"-> {f.get_outcome_display()}",
                )
            )
        letters = list(DeadLetter.objects.filter(event_id=eid))
    else:
        letters = [letter]
    for d in letters:
        mark = " (this one)" if d.pk == letter.pk else ""
        items.append(
            (
                d.last_failed_at or d.stored_at,
                f"dead letter {d.pk}{mark}",
                f"{d.dlq_topic}[{d.dlq_partition}]@{d.dlq_offset}, "
                f"replay {d.replay_count}, now {d.status}",
            )
        )
        for a in d.actions.all():
            where = (
                f" -> {a.requeue_topic}[{a.requeue_partition}]@{a.requeue_offset}"
                if a.requeue_topic
                else ""
            )
            items.append(
                (
                    a.created_at,
                    f"{a.get_action_display()} (dead letter {d.pk})",
                    f"by {a.actor}{where} {a.note}".strip(),
                )
            )
    if letter.event_id is not None:
        for i in InboxEntry.objects.filter(event_id=letter.event_id):
            items.append(
                (
                    i.processed_at,
                    "handled",
                    f"{i.handler} from {i.topic}[{i.partition}]@{i.offset}, "
                    f"attempt {i.attempt}",
                )
            )
    items = [item for item in items if item[0] is not None]
    items.sort(key=lambda item: item[0])
    return items


def _pretty_bytes(value: object) -> str:
    if value is None:
        return ""
    data = bytes(value)
    try:
        return json.dumps(json.loads(data), indent=2, sort_keys=True)
    except (UnicodeDecodeError, ValueError):
        return data.decode("utf-8", "replace")


admin.site.register(DeadLetter, DeadLetterAdmin)
