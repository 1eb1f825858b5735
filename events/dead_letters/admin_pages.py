"""The dead-letter admin's own pages: requeue one, requeue everything matching, the
detail page's resolve and discard buttons, the dry-run page.

`DeadLetterPages` is a mixin of DeadLetterAdmin (events.dead_letters.admin), whose
`get_urls` routes to these views. Each checks its permission itself (403 without it),
because the URLs can be posted to directly, not only from the buttons that are shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
)
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from events.dead_letters.admin_columns import DeadLetterModelAdmin
from events.dead_letters.history import User
from events.dead_letters.presentation import dead_letter_title, pretty_bytes
from events.dead_letters.requeue import dead_letter_requeue
from events.dead_letters.requeue_send import RequeueResult
from events.models import DeadLetter


class StatusService(Protocol):
    """dead_letter_resolve or dead_letter_discard: how many letters changed."""

    def __call__(self, *, dead_letters: Iterable[DeadLetter], user: User) -> int: ...


class DeadLetterPages(DeadLetterModelAdmin):
    """Views behind the admin's requeue, resolve and discard URLs."""

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.requeue_deadletter")

    def requeue_matching_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm (with the count), then requeue every dead letter the filter shows."""
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        query = request.GET.copy()
        # The changelist reads its filters from GET; keep ours out of them. (The
        # stubs type request.GET as immutable; Django allows replacing it.)
        for name in ("confirm", "dry_run"):
            query.pop(name, None)
        request.GET = query  # type: ignore[assignment]
        try:
            changelist = self.get_changelist_instance(request)
            queryset: QuerySet[DeadLetter] = changelist.get_queryset(request)
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
                return self.dry_run_page(request, results)
            self.report_requeue(request, results)
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
            override, error = _payload_override(
                request.POST.get("payload", ""), original
            )
            if not error:
                results = dead_letter_requeue(
                    dead_letters=[letter],
                    user=request.user,
                    dry_run=bool(request.POST.get("dry_run")),
                    payload_override=override,
                )
                if request.POST.get("dry_run"):
                    return self.dry_run_page(request, results)
                self.report_requeue(request, results)
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

    def set_status_view(
        self, request: HttpRequest, pk: int, service: StatusService, done: str
    ) -> HttpResponse:
        """Resolve or discard one dead letter (the detail page's buttons); POST only."""
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

    def dry_run_page(
        self, request: HttpRequest, results: list[RequeueResult]
    ) -> HttpResponse:
        """Show each message a requeue would send: key, value and headers, as text."""
        rows = [
            {
                "result": r,
                "key": (r.key or b"").decode("utf-8", "replace"),
                "value": pretty_bytes(r.value),
                "headers": [
                    (k, (v or b"").decode("utf-8", "replace")) for k, v in r.headers
                ],
            }
            for r in results
        ]
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Dry run: what a requeue would send",
            "rows": rows,
        }
        return TemplateResponse(
            request, "admin/events/deadletter/dry_run.html", context
        )

    def report_requeue(
        self, request: HttpRequest, results: list[RequeueResult]
    ) -> None:
        """One message with the count per outcome, then one error message per failure."""
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


def _payload_override(text: str, original: str) -> tuple[Any, str]:
    """Return (the payload to send instead, or None for the stored bytes; an error)."""
    if not text.strip() or text.strip() == original.strip():
        return None, ""
    try:
        return json.loads(text), ""
    except ValueError as exc:
        return None, f"the payload is not valid JSON: {exc}"
