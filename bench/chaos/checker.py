"""The verdict, from the database and from Kafka itself, after the pipeline drained.

- Every committed business change had exactly one downstream effect: each event
  committed (the commit log, bench/chaos/database.py, whichever relay sent it) has an
  inbox row for every handler of its type, and each reservation, cancellation and
  payment the database holds has its event and its effect (a notification, a ticket).
- Each key's events were handled in commit order: per key, outbox id order (commit
  order, see events.core.outbox) equals the order of first arrival on Kafka and the order
  of the inbox rows. Events that went through a retry topic are allowed to move (that
  is what a non-blocking retry does) and are counted apart.
- The dead letters are exactly the injected poison.
- The outbox is empty and the consumer group has no lag, retry topics included.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.db import connection

from events.core.conf import pipeline_settings
from events.core.kafka import TopicPartition, build_consumer
from events.core.registry import handlers_accepting
from events.maintenance.housekeeping import consumer_group_lag
from events.models import DeadLetter, InboxDuplicateCount, InboxEntry, OutboxEvent
from payments.models import Payment
from reservations.models import Notification, Reservation, ReservationStatus, Ticket

# Committed events without an inbox row yet.
UNHANDLED_SQL = """
    SELECT count(*) FROM chaos_commit_log c
    WHERE NOT EXISTS (SELECT 1 FROM events_inboxentry i WHERE i.event_id = c.event_id)
"""


def pipeline_settled() -> bool:
    """Nothing left to send or to handle (checked before the verdict is taken).

    The outbox being empty says nothing in cdc mode (rows go as they are written):
    every committed event must have reached a handler.
    """
    if OutboxEvent.objects.filter(parked_at__isnull=True).exists():
        return False
    with connection.cursor() as cursor:
        cursor.execute(UNHANDLED_SQL)
        (unhandled,) = cursor.fetchone()
    if unhandled:
        return False
    lag = consumer_group_lag(topics=all_topics(), timeout=5)
    return lag is not None and not any(lag.values())


def dead_letters_stored(poison: list[tuple[str, str]]) -> bool:
    """Whether every poison message sent is a DeadLetter row by now."""
    found = set(DeadLetter.objects.values_list("original_topic", "key_text"))
    return set(poison) <= found


def all_topics() -> list[str]:
    conf = pipeline_settings()
    return [t for s in conf.streams for t in [conf.topic(s), *conf.retry_topics(s)]]


def committed_events() -> list[tuple[Any, ...]]:
    """(event_id, event_type, topic, key, outbox_id) of every event committed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, event_type, topic, key, outbox_id FROM chaos_commit_log"
        )
        return list(cursor.fetchall())


def verdict(poison: list[tuple[str, str]]) -> dict[str, Any]:
    published = committed_events()
    stream_of = {pipeline_settings().topic(s): s for s in pipeline_settings().streams}
    inbox: dict[Any, list[tuple[int, str, str]]] = defaultdict(list)
    for event_id, handler, inbox_id, topic in InboxEntry.objects.values_list(
        "event_id", "handler", "id", "topic"
    ):
        inbox[event_id].append((inbox_id, handler, topic))

    lost: list[str] = []
    for event_id, event_type, topic, _key, _ in published:
        wanted = {h.name for h in handlers_accepting(stream_of[topic], event_type)}
        handled = {handler for _, handler, _ in inbox.get(event_id, [])}
        lost.extend(
            f"{event_type} {event_id} not handled by {h}" for h in wanted - handled
        )
    lost.extend(_business_changes_without_effect())

    order, retried = _order_violations(published, inbox)
    kafka_order, missing_on_kafka = _kafka_order_violations(published)
    found = set(DeadLetter.objects.values_list("original_topic", "key_text"))
    expected = set(poison)
    return {
        "events": len(published),
        "lost": len(lost),
        "lost_examples": lost[:10],
        "duplicate_effects": _duplicate_effects(),
        "duplicates_absorbed": sum(
            InboxDuplicateCount.objects.values_list("count", flat=True)
        ),
        "missing_on_kafka": missing_on_kafka,
        "order_violations": order + kafka_order,
        "order_violations_handling": order,
        "order_violations_on_kafka": kafka_order,
        "reordered_by_retry_topics": retried,
        "dead_letters_expected": len(expected),
        "dead_letters_found": len(found & expected),
        "dead_letters_unexpected": sorted(f"{t} {k}" for t, k in found - expected)[:10],
        "outbox_pending": OutboxEvent.objects.count(),
        "consumer_lag": sum(
            (consumer_group_lag(topics=all_topics(), timeout=5) or {}).values()
        ),
        "reservations": Reservation.objects.count(),
        "payments": Payment.objects.count(),
        "cancellations": Reservation.objects.filter(
            status=ReservationStatus.CANCELLED
        ).count(),
    }


def _business_changes_without_effect() -> list[str]:
    """Rows the API committed whose announced effect is missing."""
    missing: list[str] = []
    notified = Counter(Notification.objects.values_list("kind", flat=True))
    reservations = Reservation.objects.count()
    if notified["reservation_created"] != reservations:
        missing.append(
            f"{reservations} reservations, {notified['reservation_created']} "
            "reservation_created notifications"
        )
    cancelled = Reservation.objects.filter(status=ReservationStatus.CANCELLED).count()
    if notified["reservation_cancelled"] != cancelled:
        missing.append(
            f"{cancelled} cancellations, {notified['reservation_cancelled']} "
            "reservation_cancelled notifications"
        )
    unconfirmed = Reservation.objects.filter(paid_at__isnull=False).exclude(
        status=ReservationStatus.CONFIRMED
    )
    missing.extend(f"reservation {r} paid, not confirmed" for r in unconfirmed[:10])
    without_ticket = Payment.objects.exclude(reservation__ticket__isnull=False)
    missing.extend(f"payment {p} without a ticket" for p in without_ticket[:10])
    pending = Reservation.objects.filter(status=ReservationStatus.PENDING)
    missing.extend(f"reservation {r} still PENDING" for r in pending[:10])
    return missing


def _duplicate_effects() -> int:
    """Effects beyond the one each event may have.

    Most doubled effects cannot even be written: an inbox row, a ticket, a payment
    and a notification are each unique per event or reservation in the schema. What a
    doubled handler run could still leave behind is counted here: money moved twice
    (a wallet whose ledger does not add up to its balance) and more tickets than
    payments.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM payments_wallet w WHERE w.balance <> "
            "(SELECT coalesce(sum(amount), 0) FROM payments_wallettransaction t "
            "WHERE t.wallet_id = w.id)"
        )
        (unbalanced,) = cursor.fetchone()
    extra_tickets = max(0, Ticket.objects.count() - Payment.objects.count())
    return unbalanced + extra_tickets


def _order_violations(
    published: list[tuple[Any, ...]], inbox: dict[Any, list[tuple[int, str, str]]]
) -> tuple[int, int]:
    """Keys whose events were first handled out of commit order; and how many events
    a retry topic moved (not a violation)."""
    retry_topics = {t for t in all_topics() if "-retry-" in t}
    by_key: dict[tuple[str, str], list[tuple[int, Any]]] = defaultdict(list)
    for event_id, _type, topic, key, outbox_id in published:
        by_key[(topic, key)].append((outbox_id, event_id))
    violations = retried = 0
    for events in by_key.values():
        events.sort()
        firsts = []
        for _, event_id in events:
            rows = inbox.get(event_id)
            if not rows:
                continue  # counted as lost
            if any(topic in retry_topics for _, _, topic in rows):
                retried += 1
                continue
            firsts.append(min(inbox_id for inbox_id, _, _ in rows))
        if firsts != sorted(firsts):
            violations += 1
    return violations, retried


def _kafka_order_violations(published: list[tuple[Any, ...]]) -> tuple[int, int]:
    """Keys whose events are on Kafka in another order than their commit order; and
    committed events found on no topic (read by their event_id header, so a relay
    that lost the header would show here, not pass the order check on no data)."""
    commit_order: dict[Any, int] = {row[0]: row[4] for row in published}
    seen: set[Any] = set()
    arrivals: dict[tuple[str, str], list[int]] = defaultdict(list)
    for topic in {row[2] for row in published}:
        for message in _read_all(topic):
            headers = dict(message.headers() or [])
            event_id = headers.get("event_id")
            if event_id is None:
                continue
            event = _uuid(event_id.decode())
            outbox_id = commit_order.get(event)
            if outbox_id is not None:
                seen.add(event)
                arrivals[(topic, message.key().decode())].append(outbox_id)
    violations = 0
    for seq in arrivals.values():
        firsts = list(dict.fromkeys(seq))  # first arrivals, in order
        if firsts != sorted(firsts):
            violations += 1
    return violations, len(commit_order.keys() - seen)


def _uuid(text: str) -> Any:
    import uuid

    return uuid.UUID(text)


def _read_all(topic: str) -> list[Any]:
    """Every message of `topic`, partition by partition, in offset order."""
    consumer = build_consumer("chaos-checker", **{"enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        messages = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10
            )
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            got = 0
            while got < high - low:
                # No more than what is left: consume() waits out its timeout for as
                # many messages as it was asked for.
                batch = consumer.consume(min(1000, high - low - got), timeout=10)
                if not batch:
                    # A short read would hide reorderings: fail the verdict instead.
                    raise RuntimeError(f"{topic}[{p}]: read {got} of {high - low}")
                for message in batch:
                    if message.error():
                        continue
                    messages.append(message)
                    got += 1
        return messages
    finally:
        consumer.close()
