"""Dead letters: stored from the DLQ topics, requeued to their topics, resolved, discarded."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from events.core import headers as dl
from events.core.kafka import TopicPartition, build_consumer
from events.dead_letters.requeue import (
    dead_letter_discard,
    dead_letter_requeue,
    dead_letter_resolve,
)
from events.dead_letters.rows import decode_headers
from events.dead_letters.store import store_dead_letters, store_group
from events.models import DeadLetter, DeadLetterAction, FailedAttempt, InboxEntry
from tests.effects.event_types import TestPinged
from tests.effects.models import Effect
from tests.events.dead_letter_helpers import (
    make_dead_letter,
    ping_envelope,
    read_all,
    running_store,
)
from tests.events.pipeline import (
    running_consumer,
    send_events,
    send_raw,
    start_consumer_process,
)
from tests.kafka_helpers import header, read_topic
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "tests.effects.handlers.record_ping"


def effects(ping_id: str) -> int:
    return Effect.objects.filter(ping_id=ping_id).count()


def letters_of(event_id: str) -> list[DeadLetter]:
    return list(DeadLetter.objects.filter(event_id=event_id).order_by("pk"))


def committed(group: str, topic: str, partition: int) -> int:
    consumer = build_consumer(group)
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_failed_event_is_stored_with_every_field_then_requeued_edited_and_handled(
    fresh_topics, django_user_model
) -> None:
    topic = fresh_topics.topic("reservation")
    [event_id] = send_events(TestPinged(ping_id="doomed", mode="fail", key_id="K"))
    operator = django_user_model.objects.create_user("op", is_staff=True)
    with running_consumer() as runner, running_store() as store:
        wait_until(lambda: letters_of(event_id), timeout=30, what="the dead letter")
        [letter] = letters_of(event_id)
        assert letter.status == DeadLetter.Status.NEW
        assert letter.event_type == "TestPinged"
        assert letter.key_text == "K" and bytes(letter.key) == b"K"
        assert json.loads(bytes(letter.value))["data"]["ping_id"] == "doomed"
        assert letter.payload["data"]["mode"] == "fail"
        assert letter.error_class == "builtins.RuntimeError"
        assert letter.error_message == "ping doomed always fails"
        assert "RuntimeError: ping doomed always fails" in letter.traceback
        assert letter.original_topic == topic
        assert letter.original_offset == 0
        assert letter.original_timestamp is not None
        assert letter.attempts == 3
        assert letter.handler == HANDLER
        assert letter.consumer_group == runner.group_id
        assert letter.dlq_topic == fresh_topics.dlq_topic("reservation")
        assert letter.replay_count == 0
        first = FailedAttempt.objects.filter(event_id=event_id).order_by("failed_at")[0]
        assert letter.first_failed_at == first.failed_at
        assert letter.last_failed_at > letter.first_failed_at
        names = [name for name, _ in letter.headers]
        assert "event_id" in names and dl.DLT_EXCEPTION_STACKTRACE in names
        # Spring's binary numbers are stored exactly (base64 in the JSON).
        stored = dict(decode_headers(letter.headers))
        assert stored[dl.DLT_ORIGINAL_OFFSET] == dl.encode_int64(0)
        assert letter.original_partition == dl.decode_int(
            stored[dl.DLT_ORIGINAL_PARTITION], 4
        )
        # The store commits its offsets once the row is in.
        wait_until(
            lambda: (
                committed(store.group_id, letter.dlq_topic, letter.dlq_partition)
                == letter.dlq_offset + 1
            ),
            what="the store's offset commit",
        )

        # Requeued as it was, it fails again and comes back with replay count 1.
        [sent] = dead_letter_requeue(dead_letters=[letter], user=operator)
        assert sent.outcome == "sent", sent.error
        wait_until(lambda: len(letters_of(event_id)) == 2, timeout=30, what="2nd")
        second = letters_of(event_id)[1]
        assert second.replay_count == 1
        assert second.status == DeadLetter.Status.NEW

        # Requeued with a corrected payload, it is handled.
        fixed = dict(second.payload, data={**second.payload["data"], "mode": "ok"})
        [sent2] = dead_letter_requeue(
            dead_letters=[second], user=operator, payload_override=fixed
        )
        assert sent2.outcome == "sent", sent2.error
        wait_until(lambda: effects("doomed") == 1, timeout=30, what="the fixed event")

    letter.refresh_from_db()
    second.refresh_from_db()
    assert letter.status == second.status == DeadLetter.Status.REQUEUED
    [action] = letter.actions.all()
    assert (action.action, action.actor, action.user) == ("requeued", "op", operator)
    assert (action.from_status, action.to_status) == ("new", "requeued")
    assert (action.requeue_topic, action.requeue_offset) == (topic, sent.offset)
    assert [a.action for a in second.actions.all()] == ["payload_edited", "requeued"]
    assert second.actions.all()[0].payload["data"]["mode"] == "ok"
    assert json.loads(bytes(second.value))["data"]["mode"] == "fail", "original kept"
    inbox = InboxEntry.objects.get(event_id=event_id, handler=HANDLER)
    assert (inbox.topic, inbox.offset) == (topic, sent2.offset)

    on_topic = {
        m.offset(): m
        for m in read_topic(topic, expected=3)
        if m.partition() == sent.partition
    }
    again = on_topic[sent.offset]
    assert header(again, "x-requeued-from") == str(letter.pk)
    assert header(again, "x-replay-count") == "1"
    assert header(again, "event_id") == event_id
    assert header(again, dl.DLT_EXCEPTION_FQCN) is None, "DLQ headers leaked"
    leaked = [k for k, _ in again.headers() or [] if dl.is_pipeline_header(k)]
    assert leaked == [], "retry or dead-letter bookkeeping leaked"
    assert again.key() == b"K"
    assert header(on_topic[sent2.offset], "x-replay-count") == "2"


def test_store_keeps_one_row_per_dlq_message_however_often_it_is_read(
    fresh_topics,
) -> None:
    dlq = fresh_topics.dlq_topic("reservation")
    send_raw(
        dlq,
        key=b"k1",
        value=b"\xff not json",
        headers=[
            ("bin", b"\x00\xff"),
            (dl.DLT_ORIGINAL_TOPIC, b"somewhere"),
            (dl.DLT_EXCEPTION_FQCN, b"events.core.types.PoisonMessage"),
        ],
    )
    messages = read_topic(dlq, expected=1)
    assert store_dead_letters(messages) == 1
    assert store_dead_letters(messages) == 0
    # A store of another group reads the topic from the start again.
    with running_store(group_id=f"other-{uuid.uuid4().hex[:6]}") as store:
        wait_until(
            lambda: committed(store.group_id, dlq, messages[0].partition()) > 0,
            what="the second store's commit",
        )
    [letter] = DeadLetter.objects.all()
    assert letter.payload is None and letter.event_id is None
    assert bytes(letter.value) == b"\xff not json"
    assert letter.error_class == "events.core.types.PoisonMessage"
    assert decode_headers(letter.headers)[0] == ("bin", b"\x00\xff")


def test_a_letter_postgresql_would_refuse_as_written_is_stored_made_to_fit(
    fresh_topics,
) -> None:
    """Whatever a producer put in a DLQ message, the store keeps it and goes on."""
    dlq = fresh_topics.dlq_topic("reservation")
    send_raw(
        dlq,
        key=b"nul\x00key",
        value=b'{"id": "x", "type": "T\\u0000", "data": {}}',
        headers=[
            (dl.DLT_EXCEPTION_MESSAGE, b"broken \x00 message"),
            (dl.DLT_ORIGINAL_PARTITION, b"99999999999"),  # an old decimal, past int32
            (dl.DLT_ATTEMPTS, b"123456789012345"),
            (dl.DLT_HANDLER, b"h" * 500),
        ],
    )
    send_raw(dlq, key=b"next", value=b"{}")
    messages = read_topic(dlq, expected=2)
    assert store_dead_letters(messages) == 2
    odd = DeadLetter.objects.get(key_text__startswith="nul")
    assert odd.payload is None and bytes(odd.value).startswith(b'{"id"')
    assert odd.error_message == "broken \ufffd message"
    assert odd.original_partition is None and odd.attempts == 0
    assert len(odd.handler) == 200


def test_requeueing_an_event_already_handled_changes_nothing(fresh_topics) -> None:
    topic = fresh_topics.topic("reservation")
    [event_id] = send_events(TestPinged(ping_id="done", key_id="K"))
    [original] = read_topic(topic, expected=1)
    with running_consumer():
        wait_until(lambda: effects("done") == 1, what="the first handling")
        letter = make_dead_letter(fresh_topics, json.loads(original.value()))
        assert str(letter.event_id) == event_id
        [result] = dead_letter_requeue(dead_letters=[letter], user=None)
        assert result.outcome == "sent", result.error
        # Same key, same partition, handled after the requeued copy.
        send_events(TestPinged(ping_id="sentinel", key_id="K"))
        wait_until(lambda: effects("sentinel") == 1, what="the event behind it")
    assert effects("done") == 1
    [inbox] = InboxEntry.objects.filter(event_id=event_id)
    assert inbox.offset == original.offset(), "the inbox row is the first handling"
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED


@pytest.mark.parametrize(("replay_count", "sent"), [(4, True), (5, False)])
def test_requeue_stops_at_the_replay_cap(fresh_topics, replay_count, sent) -> None:
    letter = make_dead_letter(
        fresh_topics, ping_envelope("capped"), replay_count=replay_count
    )
    [result] = dead_letter_requeue(dead_letters=[letter], user=None, max_replays=5)
    letter.refresh_from_db()
    arrived = read_all(fresh_topics.topic("reservation"), expected=int(sent))
    if sent:
        assert result.outcome == "sent"
        assert [header(m, "x-replay-count") for m in arrived] == ["5"]
        assert letter.status == DeadLetter.Status.REQUEUED
    else:
        assert result.outcome == "refused"
        assert "replay cap" in result.error
        assert arrived == []
        assert letter.status == DeadLetter.Status.NEW
        [action] = letter.actions.all()
        assert action.action == DeadLetterAction.Kind.REQUEUE_REFUSED
        assert "cap 5" in action.note and action.actor == "cli"


def test_unreachable_broker_leaves_the_status_and_reports_the_error(
    fresh_topics, settings
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("nowhere"))
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    [result] = dead_letter_requeue(
        dead_letters=[letter],
        user=None,
        producer_overrides={"delivery.timeout.ms": 1500},
    )
    assert result.outcome == "failed"
    assert result.error
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.NEW
    [action] = letter.actions.all()
    assert action.action == DeadLetterAction.Kind.REQUEUE_FAILED
    assert action.to_status == DeadLetter.Status.NEW


def test_dry_run_sends_nothing_and_changes_nothing(fresh_topics) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("dry"))
    [result] = dead_letter_requeue(dead_letters=[letter], user=None, dry_run=True)
    assert result.outcome == "would_send"
    assert dict(result.headers)["x-requeued-from"] == str(letter.pk).encode()
    assert read_all(fresh_topics.topic("reservation")) == []
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.NEW
    assert not letter.actions.exists()


def test_requeue_strips_the_bookkeeping_of_old_new_and_spring_dead_letters(
    fresh_topics,
) -> None:
    bookkeeping = [
        (dl.LEGACY_DLT_ATTEMPTS, b"3"),
        (dl.LEGACY_DLT_HANDLER, b"old.handler"),
        (dl.LEGACY_DLT_FAILED_AT, b"1700000000999"),
        (dl.DLT_HANDLER, b"h"),
        (dl.DLT_FAILED_AT, b"1700000000999"),
        (dl.DLT_ORIGINAL_PARTITION, dl.encode_int32(2)),
        (dl.DLT_ORIGINAL_TIMESTAMP_TYPE, b"CreateTime"),
        (dl.DLT_EXCEPTION_CAUSE_FQCN, b"builtins.RuntimeError"),
        (dl.DLT_KEY_EXCEPTION_FQCN, b"x.Y"),  # Spring writes it
        (dl.REPLAY_COUNT, b"1"),
    ]
    letter = make_dead_letter(
        fresh_topics, ping_envelope("strip"), extra_headers=bookkeeping
    )
    [result] = dead_letter_requeue(dead_letters=[letter], user=None, dry_run=True)
    assert [k for k, _ in result.headers] == [
        dl.EVENT_ID,
        dl.EVENT_TYPE,
        dl.TRACE_ID,
        dl.REQUEUED_FROM,
        dl.REPLAY_COUNT,
    ]


def test_resolve_and_discard_record_history_and_block_requeue(
    fresh_topics, django_user_model
) -> None:
    user = django_user_model.objects.create_user("fixer", is_staff=True)
    a = make_dead_letter(fresh_topics, ping_envelope("a"))
    b = make_dead_letter(fresh_topics, ping_envelope("b"))
    assert dead_letter_resolve(dead_letters=[a], user=user, note="fixed by hand") == 1
    assert dead_letter_discard(dead_letters=[b], user=user) == 1
    assert dead_letter_discard(dead_letters=[b], user=user) == 0
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status) == ("resolved", "discarded")
    [resolved] = a.actions.all()
    assert (resolved.actor, resolved.note, resolved.to_status) == (
        "fixer",
        "fixed by hand",
        "resolved",
    )
    results = dead_letter_requeue(dead_letters=[a, b], user=user)
    assert [r.outcome for r in results] == ["skipped", "skipped"]
    assert read_all(fresh_topics.topic("reservation")) == []


@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_run_consumers_starts_the_dead_letter_store(fresh_topics, concurrency) -> None:
    from tests.conftest import child_env

    [event_id] = send_events(TestPinged(ping_id="stored", mode="fail"))
    process = start_consumer_process(
        child_env(), "--topics", "reservation", "--concurrency", concurrency
    )
    try:
        wait_until(lambda: letters_of(event_id), timeout=60, what="the stored letter")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    [letter] = letters_of(event_id)
    assert letter.handler == HANDLER
    dlq = fresh_topics.dlq_topic("reservation")
    assert committed(store_group(), dlq, letter.dlq_partition) == letter.dlq_offset + 1
