"""Services on stored dead letters: requeue to the original topic, resolve, discard.

Entry points: `dead_letter_requeue`, `dead_letter_resolve`, `dead_letter_discard`. The
admin and `manage.py requeue_dead_letters` call only these; each step is recorded as a
DeadLetterAction (who, when, what, where it landed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from events.core.headers import PIPELINE_HEADERS, REPLAY_COUNT, REQUEUED_FROM
from events.core.kafka import KafkaError, Message, build_producer
from events.dead_letters.rows import decode_headers
from events.models import DeadLetter, DeadLetterAction

logger = logging.getLogger(__name__)

MAX_REPLAYS = 5
REQUEUEABLE = (DeadLetter.Status.NEW, DeadLetter.Status.REQUEUED)
CLI_ACTOR = "cli"
# The requeue's own headers are replaced, never repeated.
DROPPED_HEADERS = PIPELINE_HEADERS | {REPLAY_COUNT, REQUEUED_FROM}

User = AbstractBaseUser | AnonymousUser | None


@dataclass
class RequeueResult:
    """What happened (or, in a dry run, would happen) to one dead letter."""

    dead_letter_id: int
    outcome: str  # sent | would_send | refused | failed | skipped
    topic: str
    replay_count: int
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition: int | None = None
    offset: int | None = None
    error: str = ""

    def describe(self) -> str:
        where = f"{self.topic}"
        if self.offset is not None:
            where += f"[{self.partition}]@{self.offset}"
        text = f"dead letter {self.dead_letter_id}: {self.outcome} -> {where}"
        text += f" (replay {self.replay_count})"
        return text + (f": {self.error}" if self.error else "")


def dead_letter_requeue(
    *,
    dead_letters: Iterable[DeadLetter],
    user: User,
    dry_run: bool = False,
    payload_override: Any = None,
    max_replays: int = MAX_REPLAYS,
    producer_overrides: dict[str, Any] | None = None,
) -> list[RequeueResult]:
    """Send dead letters back to their original topics and record it.

    Each message goes out with its original key, value and business headers (retry and
    `kafka_dlt-*` bookkeeping removed) plus `x-requeued-from` (the dead letter's id) and
    `x-replay-count` (one more than it arrived with). A dead letter is marked requeued
    only after the broker acknowledged its message (idempotent producer, acks=all); on
    a delivery error or timeout it keeps its status and the result carries the error.
    Past `max_replays` a message is not sent: the refusal is recorded with a note.
    Resolved and discarded dead letters are skipped. `payload_override` (one dead letter
    only) replaces the value; the stored original is kept and the edit is recorded.
    A requeued event that a handler already processed is a no-op there (its inbox).
    """
    ids = [d.pk for d in dead_letters]
    if payload_override is not None and len(ids) != 1:
        raise ValueError("a payload can be edited for one dead letter at a time")
    actor, user_obj = _actor(user)
    results: list[RequeueResult] = []
    with transaction.atomic():
        # Locked while sending, so two operators cannot requeue one letter twice.
        rows = list(
            DeadLetter.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        )
        to_send: list[tuple[DeadLetter, RequeueResult]] = []
        for row in rows:
            result = _plan(row, payload_override)
            results.append(result)
            if row.status not in REQUEUEABLE:
                result.outcome = "skipped"
                result.error = f"status is {row.status}"
            elif result.replay_count > max_replays:
                result.outcome = "refused"
                result.error = (
                    f"replay cap reached: it was requeued {row.replay_count} time(s) "
                    f"already (cap {max_replays}); fix the cause, then resolve or "
                    "discard it"
                )
                if not dry_run:
                    _record(
                        row,
                        DeadLetterAction.Kind.REQUEUE_REFUSED,
                        actor,
                        user_obj,
                        note=result.error,
                    )
            elif dry_run:
                result.outcome = "would_send"
            else:
                to_send.append((row, result))
        if to_send:
            _send(to_send, producer_overrides or {})
        now = timezone.now()
        for row, result in to_send:
            if result.outcome == "failed":
                _record(
                    row,
                    DeadLetterAction.Kind.REQUEUE_FAILED,
                    actor,
                    user_obj,
                    note=result.error,
                )
                continue
            if payload_override is not None:
                _record(
                    row,
                    DeadLetterAction.Kind.PAYLOAD_EDITED,
                    actor,
                    user_obj,
                    payload=payload_override,
                    note="sent instead of the original",
                )
            _record(
                row,
                DeadLetterAction.Kind.REQUEUED,
                actor,
                user_obj,
                to_status=DeadLetter.Status.REQUEUED,
                requeue_topic=result.topic,
                requeue_partition=result.partition,
                requeue_offset=result.offset,
                note=f"replay {result.replay_count}",
            )
            row.status = DeadLetter.Status.REQUEUED
            row.status_changed_at = now
            row.save(update_fields=["status", "status_changed_at"])
    for result in results:
        logger.info("requeue by %s: %s", actor, result.describe())
    return results


def dead_letter_resolve(
    *, dead_letters: Iterable[DeadLetter], user: User, note: str = ""
) -> int:
    """Mark dead letters resolved (fixed some other way); return how many changed."""
    return _set_status(
        dead_letters,
        user,
        DeadLetter.Status.RESOLVED,
        DeadLetterAction.Kind.RESOLVED,
        note,
    )


def dead_letter_discard(
    *, dead_letters: Iterable[DeadLetter], user: User, note: str = ""
) -> int:
    """Mark dead letters discarded (never to be sent again); return how many changed."""
    return _set_status(
        dead_letters,
        user,
        DeadLetter.Status.DISCARDED,
        DeadLetterAction.Kind.DISCARDED,
        note,
    )


def _set_status(
    dead_letters: Iterable[DeadLetter],
    user: User,
    status: str,
    kind: str,
    note: str,
) -> int:
    actor, user_obj = _actor(user)
    ids = [d.pk for d in dead_letters]
    changed = 0
    with transaction.atomic():
        for row in DeadLetter.objects.select_for_update().filter(pk__in=ids):
            if row.status == status:
                continue
            _record(row, kind, actor, user_obj, to_status=status, note=note)
            row.status = status
            row.status_changed_at = timezone.now()
            row.save(update_fields=["status", "status_changed_at"])
            changed += 1
    return changed


def _plan(row: DeadLetter, payload_override: Any) -> RequeueResult:
    headers = [
        (k, v) for k, v in decode_headers(row.headers) if k not in DROPPED_HEADERS
    ]
    replay = row.replay_count + 1
    headers += [
        (REQUEUED_FROM, str(row.pk).encode()),
        (REPLAY_COUNT, str(replay).encode()),
    ]
    value = _bytes(row.value)
    if payload_override is not None:
        value = json.dumps(payload_override).encode()
    return RequeueResult(
        dead_letter_id=row.pk,
        outcome="pending",
        topic=row.original_topic,
        replay_count=replay,
        key=_bytes(row.key),
        value=value,
        headers=headers,
    )


def _send(batch: list[tuple[DeadLetter, RequeueResult]], overrides: dict) -> None:
    """Produce every message and wait for each acknowledgement (or its error)."""
    producer = build_producer(**overrides)
    timeout_ms = int(
        overrides.get("delivery.timeout.ms")
        or overrides.get("message.timeout.ms")
        or 30_000
    )

    def delivered(result: RequeueResult):
        def callback(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                result.outcome = "failed"
                result.error = f"broker did not acknowledge: {error.str()}"
            else:
                result.outcome = "sent"
                result.partition = message.partition()
                result.offset = message.offset()

        return callback

    for row, result in batch:
        if not row.original_topic:
            result.outcome = "failed"
            result.error = "the dead letter names no original topic"
            continue
        producer.produce(
            result.topic,
            key=result.key,
            value=result.value,
            headers=result.headers,
            on_delivery=delivered(result),
        )
    producer.flush(timeout_ms / 1000 + 5)
    for _row, result in batch:
        if result.outcome == "pending":
            result.outcome = "failed"
            result.error = "no acknowledgement from the broker in time"


def _record(
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


def _actor(user: User) -> tuple[str, Any]:
    if user is None or not getattr(user, "is_authenticated", False):
        return CLI_ACTOR, None
    return user.get_username(), user


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None
