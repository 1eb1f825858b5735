"""Requeue as mark, send, record: claims instead of row locks held while sending.

Real PostgreSQL and a real broker throughout: concurrency is two threads with their
own database connections, a refusing broker is an unreachable address or a message
larger than the producer accepts, a crash is a requeue stopped after one of its steps.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models.functions import Now

from events.core.kafka import build_producer
from events.dead_letters.requeue import (
    dead_letter_requeue,
    requeue_mark,
    requeue_record,
)
from events.dead_letters.requeue_send import RequeueResult, plan_message, send_messages
from events.models import DeadLetter, DeadLetterAction
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope, read_all
from tests.kafka_helpers import header
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def requeued_from(topic: str, expected: int) -> list[str]:
    """The x-requeued-from of every message on `topic` (duplicates included)."""
    return sorted(
        header(m, "x-requeued-from") for m in read_all(topic, expected=expected)
    )


def actions(letter: DeadLetter) -> list[str]:
    return list(letter.actions.values_list("action", flat=True))


def test_concurrent_requeues_of_the_same_letters_send_each_once(fresh_topics) -> None:
    letters = [
        make_dead_letter(fresh_topics, ping_envelope(f"c{n}")) for n in range(20)
    ]
    # Both operators looked at the letters before either requeued them.
    ids = [d.pk for d in letters]
    seen = [list(DeadLetter.objects.filter(pk__in=ids)) for _ in range(2)]
    start = threading.Barrier(2)
    outcomes: list[list[RequeueResult]] = [[], []]

    def operator(n: int) -> None:
        try:
            start.wait()
            outcomes[n] = dead_letter_requeue(dead_letters=seen[n], user=None)
        finally:
            connection.close()

    threads = [threading.Thread(target=operator, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    expected = sorted(str(pk) for pk in ids)
    assert requeued_from(fresh_topics.topic("reservation"), len(ids)) == expected
    for letter in letters:
        by_operator = [
            [r.outcome for r in results if r.dead_letter_id == letter.pk]
            for results in outcomes
        ]
        assert sorted(by_operator) == [["sent"], ["skipped"]], letter.pk
        letter.refresh_from_db()
        assert letter.status == DeadLetter.Status.REQUEUED
        assert letter.requeue_claim is None and letter.requeue_claimed_until is None
        assert actions(letter) == ["requeued"]
    skipped = [r for results in outcomes for r in results if r.outcome == "skipped"]
    assert all(
        "another requeue is sending it" in r.error or "changed since" in r.error
        for r in skipped
    ), [r.error for r in skipped]


def test_no_row_lock_is_held_while_the_broker_answers(fresh_topics, settings) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("slow"))
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"  # every send waits its timeout
    done: list[RequeueResult] = []

    def requeue() -> None:
        try:
            done.extend(
                dead_letter_requeue(
                    dead_letters=[letter],
                    user=None,
                    producer_overrides={"delivery.timeout.ms": 4000},
                )
            )
        finally:
            connection.close()

    thread = threading.Thread(target=requeue)
    thread.start()
    wait_until(
        lambda: DeadLetter.objects.filter(
            pk=letter.pk, requeue_claim__isnull=False
        ).exists(),
        what="the committed claim",
    )
    # While the send waits for the broker, the row is free to lock.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '200ms'")
        cursor.execute(
            "SELECT id FROM events_deadletter WHERE id = %s FOR UPDATE", [letter.pk]
        )
    assert thread.is_alive(), "the send was still waiting for the broker"
    thread.join(timeout=30)
    assert [r.outcome for r in done] == ["failed"]


def test_a_send_failure_releases_the_claim_and_the_letter_requeues_later(
    fresh_topics, settings
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("later"))
    broker = settings.KAFKA_BOOTSTRAP_SERVERS
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    [failed] = dead_letter_requeue(
        dead_letters=[letter],
        user=None,
        producer_overrides={"delivery.timeout.ms": 1500},
    )
    assert failed.outcome == "failed" and failed.error
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.NEW
    assert letter.requeue_claim is None, "released at once, not at its expiry"
    assert actions(letter) == ["requeue_failed"]

    settings.KAFKA_BOOTSTRAP_SERVERS = broker
    [sent] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert sent.outcome == "sent", sent.error
    assert requeued_from(fresh_topics.topic("reservation"), 1) == [str(letter.pk)]
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED
    assert actions(letter) == ["requeue_failed", "requeued"]


def test_a_message_the_producer_refuses_fails_alone_and_stays_requeueable(
    fresh_topics,
) -> None:
    big = make_dead_letter(fresh_topics, ping_envelope("big"))
    small = make_dead_letter(fresh_topics, ping_envelope("small"))
    # Larger than the producer's message.max.bytes: produce() itself raises.
    DeadLetter.objects.filter(pk=big.pk).update(value=b"x" * 2_000_000)
    big.refresh_from_db()

    results = dead_letter_requeue(dead_letters=[big, small], user=None)

    assert [(r.dead_letter_id, r.outcome) for r in results] == [
        (big.pk, "failed"),
        (small.pk, "sent"),
    ]
    assert "the producer refused it" in results[0].error
    big.refresh_from_db()
    assert (big.status, big.requeue_claim) == (DeadLetter.Status.NEW, None)
    assert requeued_from(fresh_topics.topic("reservation"), 1) == [str(small.pk)]
    [again] = dead_letter_requeue(dead_letters=[big], user=None, dry_run=True)
    assert again.outcome == "would_send"


def wait_for_claim_expiry(letter: DeadLetter) -> None:
    """Until the database's clock, which requeue_mark compares with, passed the claim."""
    wait_until(
        lambda: DeadLetter.objects.filter(
            pk=letter.pk, requeue_claimed_until__lt=Now()
        ).exists(),
        timeout=10,
        what="the claim's expiry",
    )


def test_a_claim_left_by_a_crashed_requeue_is_requeueable_after_its_expiry(
    fresh_topics,
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("crashed"))
    # The crashed requeue: it marked, then died before sending.
    claim = requeue_mark(dead_letters=[letter], max_replays=5, ttl=timedelta(seconds=2))
    assert claim.holds(claim.rows[0])

    [blocked] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert blocked.outcome == "skipped"
    assert "another requeue is sending it" in blocked.error
    assert read_all(fresh_topics.topic("reservation")) == []

    wait_for_claim_expiry(letter)
    [sent] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert sent.outcome == "sent", sent.error
    assert requeued_from(fresh_topics.topic("reservation"), 1) == [str(letter.pk)]
    letter.refresh_from_db()
    assert (letter.status, letter.requeue_claim) == (DeadLetter.Status.REQUEUED, None)
    assert actions(letter) == ["requeued"]


def test_a_crash_after_sending_sends_again_after_expiry_and_records_once(
    fresh_topics,
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("half"))
    # The crashed requeue: it marked and sent, then died before recording.
    claim = requeue_mark(dead_letters=[letter], max_replays=5, ttl=timedelta(seconds=1))
    first = plan_message(claim.rows[0], None)
    send_messages([first], build_producer(), timeout=30)
    assert first.outcome == "sent"
    wait_for_claim_expiry(letter)

    [second] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert second.outcome == "sent", second.error
    # Two copies of one event: the handlers' inbox absorbs the second.
    assert requeued_from(fresh_topics.topic("reservation"), 2) == [str(letter.pk)] * 2
    # The crashed requeue's record step, run late, finds its claim gone.
    requeue_record(token=claim.token, results=[first], actor="cli", user=None)
    assert "not recorded" in first.error
    letter.refresh_from_db()
    assert actions(letter) == ["requeued"]


def test_the_record_step_is_idempotent(fresh_topics) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("twice"))
    claim = requeue_mark(dead_letters=[letter], max_replays=5, ttl=timedelta(minutes=1))
    result = plan_message(claim.rows[0], None)
    send_messages([result], build_producer(), timeout=30)
    for _ in range(2):
        requeue_record(token=claim.token, results=[result], actor="cli", user=None)
    letter.refresh_from_db()
    assert (letter.status, letter.requeue_claim) == (DeadLetter.Status.REQUEUED, None)
    assert actions(letter) == ["requeued"]


def test_a_letter_that_changed_since_it_was_loaded_is_not_claimed(
    fresh_topics,
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("stale"))
    [sent] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert sent.outcome == "sent"
    # `letter` still says "new": a second operator acting on the old page.
    [stale] = dead_letter_requeue(dead_letters=[letter], user=None)
    assert stale.outcome == "skipped" and "changed since" in stale.error
    assert requeued_from(fresh_topics.topic("reservation"), 1) == [str(letter.pk)]
    assert DeadLetterAction.objects.filter(dead_letter=letter).count() == 1
