"""How a dead letter reads on a page: its title, error line, times and bytes.

Plain functions of a row, shared by the list columns, the detail fields and the
custom pages, so that a dead letter is named and timed the same way everywhere.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.utils import timezone
from django.utils.text import Truncator

from events.models import DeadLetter


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


def or_dash(value: object) -> str:
    """Show a missing coordinate (partition, offset) as a dash rather than "None"."""
    return "-" if value is None else str(value)


def pretty_bytes(value: bytes | memoryview | None) -> str:
    """Show message bytes as indented JSON when they are JSON, else as lenient UTF-8."""
    if value is None:
        return ""
    data = bytes(value)
    try:
        return json.dumps(json.loads(data), indent=2, sort_keys=True)
    except (UnicodeDecodeError, ValueError):
        return data.decode("utf-8", "replace")
