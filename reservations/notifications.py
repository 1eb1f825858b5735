"""Notification services: what the handlers write when something happens to a user.

Handlers pass the event's id, so a redelivered event never notifies twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from events.core.bulk_insert import bulk_insert
from reservations.models import Notification


def notification_create(
    *,
    user_id: int,
    kind: str,
    message: str,
    event_id: uuid.UUID | str | None = None,
) -> Notification:
    """Create a notification for the user; with `event_id`, at most one per event.

    A handler passes the event's id so a redelivered event returns the existing row
    instead of notifying twice (a unique constraint backs this under concurrency).
    """
    if event_id is None:
        return Notification.objects.create(user_id=user_id, kind=kind, message=message)
    # One statement, no savepoint: handlers call this once per event, and a consumer
    # handling thousands of events a second cannot afford get_or_create's round trips.
    # On conflict the row is kept (message rewritten to the same text) and returned.
    [notification] = Notification.objects.bulk_create(
        [
            Notification(
                user_id=user_id,
                kind=kind,
                event_id=uuid.UUID(str(event_id)),
                message=message,
            )
        ],
        update_conflicts=True,
        unique_fields=["user", "kind", "event_id"],
        update_fields=["message"],
    )
    return notification


@dataclass(frozen=True)
class NewNotification:
    user_id: int
    kind: str
    message: str
    event_id: uuid.UUID


def notification_create_many(*, notifications: list[NewNotification]) -> int:
    """Create notifications in one statement, at most one per (user, kind, event).

    The batch handlers' service: one insert for a whole consumed batch.
    """
    if not notifications:
        return 0
    # bulk_insert, not bulk_create: one JSON parameter rather than a model per row
    # quoted in Python (events.core.bulk_insert says why that matters here).
    bulk_insert(
        Notification,
        [
            {
                "user_id": n.user_id,
                "kind": n.kind,
                "message": n.message,
                "event_id": n.event_id,
            }
            for n in notifications
        ],
        unique_fields=("user", "kind", "event_id"),
    )
    return len(notifications)
