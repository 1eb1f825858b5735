"""A dead letter's event in time order, gathered from every pipeline table it touched.

`dead_letter_timeline` is what the detail page's "Timeline" shows: the outbox row, its
publication, each failed attempt, every dead letter of the same event and what
operators did to them, and the inbox rows of the handlers that finally processed it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from events.models import (
    DeadLetter,
    FailedAttempt,
    InboxEntry,
    OutboxEvent,
    PublishedEvent,
)

# (when, what, detail); `when` is None for a step whose time is unknown.
TimelineItem = tuple[datetime | None, str, str]


def dead_letter_timeline(letter: DeadLetter) -> list[tuple[datetime, str, str]]:
    """The event's life in time order: outbox, publish, failures, DLQ, requeues, inbox.

    A letter without an event id (undecodable bytes) has only its own history.
    """
    items: list[TimelineItem] = []
    if letter.event_id is not None:
        items += _before_the_dead_letter(letter.event_id)
        letters = list(DeadLetter.objects.filter(event_id=letter.event_id))
    else:
        letters = [letter]
    for other in letters:
        items += _dead_letter_history(other, this=letter)
    if letter.event_id is not None:
        items += _handled(letter.event_id)
    dated = [(when, what, detail) for when, what, detail in items if when is not None]
    dated.sort(key=lambda item: item[0])
    return dated


def _before_the_dead_letter(event_id: uuid.UUID) -> list[TimelineItem]:
    """The outbox row, its publication and every failed attempt of the event."""
    items: list[TimelineItem] = []
    for o in OutboxEvent.objects.filter(event_id=event_id):
        items.append((o.created_at, "outbox", f"{o.state} for {o.topic}"))
    for p in PublishedEvent.objects.filter(event_id=event_id):
        items.append((p.created_at, "committed", f"outbox row {p.outbox_id}"))
        items.append((p.sent_at, "published", f"{p.topic}[{p.partition}]@{p.offset}"))
    for f in FailedAttempt.objects.filter(event_id=event_id).order_by("failed_at"):
        items.append(
            (
                f.failed_at,
                f"failed attempt {f.attempt}",
                f"{f.handler}: {f.exception_class}: {f.message[:200]} "
                f"-> {f.get_outcome_display()}",
            )
        )
    return items


def _dead_letter_history(letter: DeadLetter, *, this: DeadLetter) -> list[TimelineItem]:
    """One dead letter's arrival and every operator action on it."""
    mark = " (this one)" if letter.pk == this.pk else ""
    items: list[TimelineItem] = [
        (
            letter.last_failed_at or letter.stored_at,
            f"dead letter {letter.pk}{mark}",
            f"{letter.dlq_topic}[{letter.dlq_partition}]@{letter.dlq_offset}, "
            f"replay {letter.replay_count}, now {letter.status}",
        )
    ]
    for a in letter.actions.all():
        where = (
            f" -> {a.requeue_topic}[{a.requeue_partition}]@{a.requeue_offset}"
            if a.requeue_topic
            else ""
        )
        items.append(
            (
                a.created_at,
                f"{a.get_action_display()} (dead letter {letter.pk})",
                f"by {a.actor}{where} {a.note}".strip(),
            )
        )
    return items


def _handled(event_id: uuid.UUID) -> list[TimelineItem]:
    """The inbox rows: which handler processed the event, from where, at which try."""
    return [
        (
            i.processed_at,
            "handled",
            f"{i.handler} from {i.topic}[{i.partition}]@{i.offset}, "
            f"attempt {i.attempt}",
        )
        for i in InboxEntry.objects.filter(event_id=event_id)
    ]
