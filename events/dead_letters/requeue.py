"""Services on stored dead letters: requeue to the original topic, resolve, discard.

Entry points: `dead_letter_requeue`, `dead_letter_resolve`, `dead_letter_discard`. The
admin and `manage.py requeue_dead_letters` call only these; each step is recorded as a
DeadLetterAction (who, when, what, where it landed).

A requeue is three steps, so that no row lock (and no transaction) is held while the
broker answers, which may take the whole delivery timeout (35 s by default):

1. mark (`requeue_mark`, one short transaction): claim the letters to send by setting
   `requeue_claim` (a token of this requeue) and `requeue_claimed_until` on them. A
   letter is claimed only if it is requeueable, under the replay cap, unchanged since
   the caller loaded it (same status and status_changed_at) and not claimed by a
   requeue whose claim is still live. The conditional UPDATE is atomic, so of two
   concurrent requeues of one letter exactly one claims it; the other reports it
   skipped (claimed by another requeue, or changed since it was loaded).
2. send (`send_messages`, no transaction): produce and wait for each acknowledgement.
3. record (`requeue_record`, one short transaction): for each letter still carrying
   this requeue's token, mark it requeued (sent) or record the failure (failed), and
   clear the claim either way, so a failed letter is requeueable at once.

The rule for crashes: a claim expires `claim_ttl` after the mark (by default the
longest a send may take plus CLAIM_MARGIN), and an expired claim is free to take.
A crash after the mark and before the send loses nothing: the letter is requeueable
again once its claim expires. A crash after the send and before the record leaves the
message on its topic with the letter unmarked; after the expiry it may be requeued
again, sending a second copy of the same event, which the handlers' inbox absorbs
(at least once, as everywhere in the pipeline). Every step is idempotent: mark takes
only free letters, and record acts only on letters still holding its token and clears
it, so recording twice records once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from events.core.kafka import build_producer
from events.dead_letters.history import User, actor_of, record_action
from events.dead_letters.requeue_send import (
    RequeueResult,
    plan_message,
    send_messages,
    send_timeout_seconds,
)
from events.models import DeadLetter, DeadLetterAction

logger = logging.getLogger(__name__)

MAX_REPLAYS = 5
REQUEUEABLE = (DeadLetter.Status.NEW, DeadLetter.Status.REQUEUED)
# How much longer than its longest possible send a claim lives: room for the record
# step and a slow database, so that only a crashed requeue's claim ever expires.
CLAIM_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class RequeueClaim:
    """The mark step's answer: this requeue's token and every letter asked for, as
    the database holds it now (claimed by this token, or not), in id order."""

    token: uuid.UUID
    rows: list[DeadLetter]

    def holds(self, row: DeadLetter) -> bool:
        return row.requeue_claim == self.token


def dead_letter_requeue(
    *,
    dead_letters: Iterable[DeadLetter],
    user: User,
    dry_run: bool = False,
    payload_override: Any = None,
    max_replays: int = MAX_REPLAYS,
    producer_overrides: dict[str, Any] | None = None,
    claim_ttl: timedelta | None = None,
) -> list[RequeueResult]:
    """Send dead letters back to their original topics and record it.

    Each message goes out with its original key, value and business headers (retry,
    `kafka_dlt-*` and `x-dlt-*` bookkeeping removed) plus `x-requeued-from` (the dead
    letter's id) and `x-replay-count` (one more than it arrived with). A dead letter is
    marked requeued only after the broker acknowledged its message (idempotent
    producer, acks=all); on a delivery error or timeout it keeps its status, is
    requeueable again at once, and the result carries the error.
    Past `max_replays` a message is not sent: the refusal is recorded with a note.
    Resolved and discarded dead letters are skipped, and so are letters another
    requeue is sending or that changed since `dead_letters` were loaded (see the
    module docstring: mark, send, record). `payload_override` (one dead letter
    only) replaces the value; the stored original is kept and the edit is recorded.
    A requeued event that a handler already processed is a no-op there (its inbox).

    Call it outside a transaction: inside one, the claims (and their row locks) last
    until the caller commits, which is what the three steps are there to avoid.
    """
    letters = list(dead_letters)
    if payload_override is not None and len(letters) != 1:
        raise ValueError("a payload can be edited for one dead letter at a time")
    actor, user_obj = actor_of(user)
    if dry_run:
        rows = DeadLetter.objects.filter(pk__in=[d.pk for d in letters]).order_by("pk")
        results = _classify(
            rows, None, payload_override, max_replays, (actor, user_obj)
        )
    else:
        results = _mark_send_record(
            letters,
            payload_override,
            max_replays,
            producer_overrides or {},
            claim_ttl,
            (actor, user_obj),
        )
    for result in results:
        logger.info("requeue by %s: %s", actor, result.describe())
    return results


def _mark_send_record(
    letters: list[DeadLetter],
    payload_override: Any,
    max_replays: int,
    overrides: dict[str, Any],
    claim_ttl: timedelta | None,
    who: tuple[str, Any],
) -> list[RequeueResult]:
    """The three steps of the module docstring, for `dead_letter_requeue`."""
    actor, user = who
    timeout = send_timeout_seconds(overrides)
    claim = requeue_mark(
        dead_letters=letters,
        max_replays=max_replays,
        ttl=claim_ttl or timedelta(seconds=timeout) + CLAIM_MARGIN,
    )
    results = _classify(claim.rows, claim, payload_override, max_replays, who)
    to_send = [r for r in results if r.outcome == "pending"]
    if to_send:
        try:
            send_messages(to_send, build_producer(**overrides), timeout=timeout)
        finally:
            # Whatever stopped the send, release the claims now (recording the
            # failures) rather than leave the letters unrequeueable until expiry.
            _interrupted(to_send)
            requeue_record(
                token=claim.token,
                results=to_send,
                actor=actor,
                user=user,
                payload_override=payload_override,
            )
    return results


def requeue_mark(
    *, dead_letters: Sequence[DeadLetter], max_replays: int, ttl: timedelta
) -> RequeueClaim:
    """Step 1: claim, in one short transaction, the letters this requeue may send.

    A letter is claimed when it is requeueable, has not reached `max_replays`, has the
    status and status_changed_at it had in `dead_letters` (nobody acted on it since
    the caller looked), and carries no claim or an expired one. The claim lasts `ttl`
    by the database's clock.
    """
    token = uuid.uuid4()
    seen: dict[tuple[str, datetime | None], list[int]] = {}
    for letter in dead_letters:
        seen.setdefault((letter.status, letter.status_changed_at), []).append(letter.pk)
    unchanged = [
        Q(pk__in=pks, status=status)
        & (
            Q(status_changed_at__isnull=True)
            if changed_at is None
            else Q(status_changed_at=changed_at)
        )
        for (status, changed_at), pks in seen.items()
    ]
    with transaction.atomic():
        if unchanged:
            DeadLetter.objects.filter(
                reduce(or_, unchanged),
                Q(requeue_claim__isnull=True) | Q(requeue_claimed_until__lt=Now()),
                status__in=REQUEUEABLE,
                replay_count__lt=max_replays,
            ).update(requeue_claim=token, requeue_claimed_until=Now() + ttl)
        rows = list(
            DeadLetter.objects.filter(pk__in=[d.pk for d in dead_letters]).order_by(
                "pk"
            )
        )
    return RequeueClaim(token=token, rows=rows)


def requeue_record(
    *,
    token: uuid.UUID,
    results: Sequence[RequeueResult],
    actor: str,
    user: Any,
    payload_override: Any = None,
) -> None:
    """Step 3: record what the send did, for the letters still claimed by `token`.

    Sent: a REQUEUED action (after PAYLOAD_EDITED, with an override) and status
    requeued, unless an operator resolved or discarded it meanwhile. Failed: a
    REQUEUE_FAILED action, status unchanged. The claim is cleared either way. A letter
    no longer holding `token` (its claim expired and another requeue took it, or this
    was recorded already) is left alone; a sent one says so in its result's error.
    """
    by_id = {r.dead_letter_id: r for r in results}
    with transaction.atomic():
        rows = DeadLetter.objects.select_for_update().filter(
            pk__in=list(by_id), requeue_claim=token
        )
        recorded = set()
        now = timezone.now()
        for row in rows.order_by("pk"):
            recorded.add(row.pk)
            _record_outcome(row, by_id[row.pk], actor, user, payload_override, now)
    for result in results:
        if result.outcome == "sent" and result.dead_letter_id not in recorded:
            result.error = (
                "sent, but its claim had expired and another requeue holds it now: "
                "not recorded as requeued by this one"
            )


def _record_outcome(
    row: DeadLetter,
    result: RequeueResult,
    actor: str,
    user: Any,
    payload_override: Any,
    now: datetime,
) -> None:
    """Write one claimed letter's actions and status, and release its claim."""
    if result.outcome != "sent":
        record_action(
            row, DeadLetterAction.Kind.REQUEUE_FAILED, actor, user, note=result.error
        )
    else:
        if payload_override is not None:
            record_action(
                row,
                DeadLetterAction.Kind.PAYLOAD_EDITED,
                actor,
                user,
                payload=payload_override,
                note="sent instead of the original",
            )
        # An operator may have resolved or discarded it meanwhile: that stands, and
        # the history still says it was sent.
        requeueable = row.status in REQUEUEABLE
        record_action(
            row,
            DeadLetterAction.Kind.REQUEUED,
            actor,
            user,
            to_status=DeadLetter.Status.REQUEUED if requeueable else row.status,
            requeue_topic=result.topic,
            requeue_partition=result.partition,
            requeue_offset=result.offset,
            note=f"replay {result.replay_count}",
        )
        if requeueable:
            row.status = DeadLetter.Status.REQUEUED
            row.status_changed_at = now
    row.requeue_claim = None
    row.requeue_claimed_until = None
    row.save(
        update_fields=[
            "status",
            "status_changed_at",
            "requeue_claim",
            "requeue_claimed_until",
        ]
    )


def _classify(
    rows: Iterable[DeadLetter],
    claim: RequeueClaim | None,
    payload_override: Any,
    max_replays: int,
    who: tuple[str, Any],
) -> list[RequeueResult]:
    """One result per row: "pending" (claimed: to send) or why it is not sent. With
    no claim (a dry run) "would_send" instead, and nothing is written; otherwise a
    refusal (replay cap) is recorded as an action."""
    results = []
    for row in rows:
        result = plan_message(row, payload_override)
        results.append(result)
        if claim is not None and claim.holds(row):
            continue
        result.outcome = "skipped"
        until = row.requeue_claimed_until
        if row.status not in REQUEUEABLE:
            result.error = f"status is {row.status}"
        elif result.replay_count > max_replays:
            result.outcome = "refused"
            result.error = (
                f"replay cap reached: it was requeued {row.replay_count} time(s) "
                f"already (cap {max_replays}); fix the cause, then resolve or "
                "discard it"
            )
            if claim is not None:
                kind = DeadLetterAction.Kind.REQUEUE_REFUSED
                record_action(row, kind, *who, note=result.error)
        elif claim is None:
            result.outcome = "would_send"
        elif until is not None and until > timezone.now():
            result.error = (
                "another requeue is sending it (claimed until "
                f"{timezone.localtime(until):%H:%M:%S})"
            )
        else:
            result.error = "it changed since it was loaded; look at it again"
    return results


def _interrupted(results: list[RequeueResult]) -> None:
    for result in results:
        if result.outcome == "pending":
            result.outcome = "failed"
            result.error = result.error or "the send was interrupted"


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
    actor, user_obj = actor_of(user)
    ids = [d.pk for d in dead_letters]
    changed = 0
    with transaction.atomic():
        for row in DeadLetter.objects.select_for_update().filter(pk__in=ids):
            if row.status == status:
                continue
            record_action(row, kind, actor, user_obj, to_status=status, note=note)
            row.status = status
            row.status_changed_at = timezone.now()
            row.save(update_fields=["status", "status_changed_at"])
            changed += 1
    return changed
