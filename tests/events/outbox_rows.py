"""Filling the outbox fast and reading what the relay delivered, for relay tests."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

from django.db import connection

from events.core.kafka import Message


def insert_outbox_rows(
    count: int, *, topic: str, keys: int = 50, payload_bytes: int = 200, start: int = 0
) -> None:
    """Insert `count` committed rows; row i has key k<i % keys> and sequence number i."""
    pad = "x" * payload_bytes
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO events_outboxevent (event_id, event_type, schema_version, topic,
                key, payload, headers, aggregate_type, aggregate_id, created_at,
                last_error)
            SELECT gen_random_uuid(), 'TestSequenced', 1, %(topic)s, 'k' || (i %% %(keys)s),
                jsonb_build_object('seq', i, 'key', 'k' || (i %% %(keys)s), 'pad', %(pad)s)::text,
                '{}'::jsonb, 'test', 'k' || (i %% %(keys)s), now(), ''
            FROM generate_series(%(start)s, %(start)s + %(count)s - 1) AS i
            ORDER BY i
            """,
            {"topic": topic, "keys": keys, "pad": pad, "count": count, "start": start},
        )


def sequences_by_key(messages: list[Message]) -> dict[str, list[int]]:
    """Each key's sequence numbers in arrival order (duplicates kept)."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        body = json.loads(message.value())
        by_key[body["key"]].append(body["seq"])
    return by_key


def first_occurrences(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def new_topic_name(prefix: str, label: str) -> str:
    return f"{prefix}{label}-{uuid.uuid4().hex[:6]}"
