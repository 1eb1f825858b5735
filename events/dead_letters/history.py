"""A dead letter's history: who did what to it, as DeadLetterAction rows.

`record_action` is the one writer of DeadLetterAction; `actor_of` names who acts (a
username, or "cli" for the management command and other callers without a user).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from events.models import DeadLetter, DeadLetterAction

CLI_ACTOR = "cli"

User = AbstractBaseUser | AnonymousUser | None


def record_action(
    row: DeadLetter,
    kind: str,
    actor: str,
    user: Any,
    *,
    to_status: str = "",
    note: str = "",
    payload: Any = None,
    requeue_topic: str = "",
    requeue_partition: int | None = None,
    requeue_offset: int | None = None,
) -> None:
    """Append one step to `row`'s history; from_status is its status now."""
    DeadLetterAction.objects.create(
        dead_letter=row,
        action=kind,
        actor=actor,
        user=user,
        note=note,
        from_status=row.status,
        to_status=to_status or row.status,
        payload=payload,
        requeue_topic=requeue_topic,
        requeue_partition=requeue_partition,
        requeue_offset=requeue_offset,
    )


def actor_of(user: User) -> tuple[str, Any]:
    """(the name recorded as actor, the user to link or None)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return CLI_ACTOR, None
    return user.get_username(), user
