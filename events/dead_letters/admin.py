"""The dead-letter admin: browse, inspect, requeue, resolve and discard stored dead letters."""

import json
from collections.abc import Callable
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
)
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from events.dead_letters.requeue import (
    MAX_REPLAYS,
    REQUEUEABLE,
    dead_letter_discard,
    dead_letter_requeue,
    dead_letter_resolve,
)
from events.models import (
    DeadLetter,
    FailedAttempt,
    InboxEntry,
    OutboxEvent,
    PublishedEvent,
)


def _time_field(name: str) -> Callable:
    """A read-only detail field showing the datetime field `name` to the millisecond."""

    @admin.display(description=DeadLetter._meta.get_field(name).verbose_name)
    def show(self: admin.ModelAdmin, obj: DeadLetter) -> str:
        return format_time(getattr(obj, name), precise=True)

    return show


class DeadLetterAdmin(admin.ModelAdmin):
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

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.requeue_deadletter")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list:
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
            "title": "Dead letters",
            # The app menu on the left would leave the table 600 px at 1,280; the
            # breadcrumbs lead to the same places.
            "is_nav_sidebar_enabled": False,
            "dead_letter_counts": [
                (topic, [per.get(s, 0) for s in statuses], sum(per.values()))
                for topic, per in by_topic.items()
            ],
            "dead_letter_statuses": statuses,
            "can_requeue": self.has_requeue_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """Show one dead letter, with what may be done to it as buttons on top."""
        # Every field is read-only; a POST would only write the row back as read,
        # over whatever a requeue or resolve changed meanwhile.
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET"])
        context: dict = {
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
        """Requeue one dead letter, optionally with an edited payload or as a dry run.

        An empty payload, or the pretty-printed original left as it is, sends the
        stored bytes unchanged; anything else must be JSON and is sent instead.
        """
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
            "title": f"Requeue {dead_letter_title(letter, capitalize=False)}",
            "letter": letter,
            "original_size": len(bytes(letter.value))
            if letter.value is not None
            else None,
            "payload": request.POST.get("payload", original),
            "error": error,
        }
        return TemplateResponse(
            request, "admin/events/deadletter/requeue_one.html", context
        )

    def resolve_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Mark one dead letter resolved (the detail page's button); POST only."""
        return self._set_status_view(request, pk, dead_letter_resolve, "resolved")

    def discard_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Mark one dead letter discarded (the detail page's button); POST only."""
        return self._set_status_view(request, pk, dead_letter_discard, "discarded")

    def _set_status_view(
        self, request: HttpRequest, pk: int, service: Callable, done: str
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        letter = get_object_or_404(DeadLetter, pk=pk)
        if service(dead_letters=[letter], user=request.user):
            self.message_user(
                request, f"Dead letter {letter.pk} {done}.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                f"Dead letter {letter.pk} was {done} already; nothing changed.",
                messages.WARNING,
            )
        return redirect(reverse("admin:events_deadletter_change", args=[letter.pk]))

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

    # -- list columns ---------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DeadLetter) -> str:
        return format_html(
            '<span class="dl-status dl-status-{}">{}</span>',
            obj.status,
            obj.get_status_display(),
        )

    @admin.display(description="topic / event", ordering="original_topic")
    def topic_and_type(self, obj: DeadLetter) -> str:
        return format_html(
            '{}<br><span class="dl-quiet">{}</span>',
            obj.original_topic or "(unknown)",
            obj.event_type or "undecodable",
        )

    @admin.display(description="key", ordering="key_text")
    def key_short(self, obj: DeadLetter) -> str:
        if not obj.key_text:
            return "-"
        return format_html(
            '<span title="{}">{}</span>',
            obj.key_text,
            Truncator(obj.key_text).chars(24),
        )

    @admin.display(description="error")
    def error_summary(self, obj: DeadLetter) -> str:
        short, full = error_summary_text(obj)
        return format_html('<span class="dl-error" title="{}">{}</span>', full, short)

    @admin.display(description="replays", ordering="replay_count")
    def replays(self, obj: DeadLetter) -> int:
        return obj.replay_count

    @admin.display(description="last failure", ordering="last_failed_at")
    def last_failure(self, obj: DeadLetter) -> str:
        if obj.last_failed_at is None:
            return "-"
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            obj.last_failed_at.isoformat(),
            format_time(obj.last_failed_at, precise=True),
            format_time(obj.last_failed_at),
        )

    # -- detail fields --------------------------------------------------------------

    status_changed = _time_field("status_changed_at")
    first_failed = _time_field("first_failed_at")
    last_failed = _time_field("last_failed_at")
    original_time = _time_field("original_timestamp")
    stored = _time_field("stored_at")

    @admin.display(description="original topic[partition]@offset")
    def original_position(self, obj: DeadLetter) -> str:
        return (
            f"{obj.original_topic or '(unknown)'}"
            f"[{_or_dash(obj.original_partition)}]@{_or_dash(obj.original_offset)}"
        )

    @admin.display(description="DLQ topic[partition]@offset")
    def dlq_position(self, obj: DeadLetter) -> str:
        return f"{obj.dlq_topic}[{obj.dlq_partition}]@{obj.dlq_offset}"

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
        return format_html(
            "<table><thead><tr><th>when</th><th>what</th><th>detail</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (format_time(when, precise=True), what, detail)
                    for when, what, detail in rows
                ),
            ),
        )


def dead_letter_title(letter: DeadLetter, *, capitalize: bool = True) -> str:
    """Name a dead letter for a page heading: its id, original topic and key."""
    topic = letter.original_topic or "(unknown topic)"
    name = f"dead letter {letter.pk}: {topic} / {letter.key_text or '(no key)'}"
    return name[0].upper() + name[1:] if capitalize else name


def error_summary_text(letter: DeadLetter, *, limit: int = 80) -> tuple[str, str]:
    """Return (class short name: message cut to `limit`, the full class and message)."""
    short_class = letter.error_class.rsplit(".", 1)[-1]
    message = " ".join(letter.error_message.split())
    short = ": ".join(p for p in (short_class, Truncator(message).chars(limit)) if p)
    full = ": ".join(p for p in (letter.error_class, letter.error_message) if p)
    return short or "-", full


def format_time(value: datetime | None, *, precise: bool = False) -> str:
    """Show a time to the second in the current time zone (to the ms, named, if precise)."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    if not precise:
        return f"{local:%Y-%m-%d %H:%M:%S}"
    return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {local:%Z}"


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


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _pretty_bytes(value: object) -> str:
    if value is None:
        return ""
    data = bytes(value)
    try:
        return json.dumps(json.loads(data), indent=2, sort_keys=True)
    except (UnicodeDecodeError, ValueError):
        return data.decode("utf-8", "replace")


admin.site.register(DeadLetter, DeadLetterAdmin)
