"""The dead-letter admin's computed columns (list) and read-only fields (detail page).

`DeadLetterColumns` is a mixin of DeadLetterAdmin (events.dead_letters.admin): the
names below are what its `list_display` and `fieldsets` refer to. Each returns HTML
escaped by `format_html`, so a payload or error message can never inject markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib import admin
from django.db.models import Field
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from events.dead_letters.letter_headers import display_value
from events.dead_letters.presentation import (
    error_summary_text,
    format_time,
    or_dash,
    pretty_bytes,
)
from events.dead_letters.rows import decode_headers
from events.dead_letters.timeline import dead_letter_timeline
from events.models import DeadLetter

if TYPE_CHECKING:
    DeadLetterModelAdmin = admin.ModelAdmin[DeadLetter]
else:
    # ModelAdmin is generic only in django-stubs; at run time it cannot be subscripted.
    DeadLetterModelAdmin = admin.ModelAdmin


def _time_field(name: str) -> Callable[[DeadLetterModelAdmin, DeadLetter], str]:
    """A read-only detail field showing the datetime field `name` to the millisecond."""

    field = DeadLetter._meta.get_field(name)
    description = field.verbose_name if isinstance(field, Field) else name

    @admin.display(description=description)
    def show(self: DeadLetterModelAdmin, obj: DeadLetter) -> str:
        return format_time(getattr(obj, name), precise=True)

    return show


class DeadLetterColumns(DeadLetterModelAdmin):
    """List columns and detail fields computed from a DeadLetter row."""

    # -- list columns ---------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DeadLetter) -> SafeString:
        return format_html(
            '<span class="dl-status dl-status-{}">{}</span>',
            obj.status,
            obj.get_status_display(),
        )

    @admin.display(description="topic / event", ordering="original_topic")
    def topic_and_type(self, obj: DeadLetter) -> SafeString:
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
    def error_summary(self, obj: DeadLetter) -> SafeString:
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
            f"[{or_dash(obj.original_partition)}]@{or_dash(obj.original_offset)}"
        )

    @admin.display(description="DLQ topic[partition]@offset")
    def dlq_position(self, obj: DeadLetter) -> str:
        return f"{obj.dlq_topic}[{obj.dlq_partition}]@{obj.dlq_offset}"

    @admin.display(description="traceback")
    def traceback_pre(self, obj: DeadLetter) -> SafeString:
        return format_html("<pre>{}</pre>", obj.traceback or "-")

    @admin.display(description="payload")
    def payload_pre(self, obj: DeadLetter) -> SafeString:
        if obj.payload is None:
            return format_html("<pre>{}</pre>", pretty_bytes(obj.value))
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True)
        )

    @admin.display(description="headers")
    def headers_pre(self, obj: DeadLetter) -> SafeString:
        # Spring's binary numbers (partition, offset, timestamp) as decimals.
        return format_html(
            "<pre>{}</pre>",
            "\n".join(
                f"{name}: {display_value(name, value)}"
                for name, value in decode_headers(obj.headers or [])
            ),
        )

    @admin.display(description="timeline")
    def timeline(self, obj: DeadLetter) -> SafeString:
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
