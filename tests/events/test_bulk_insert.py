"""Bulk inserts: the plain insert first, ON CONFLICT only after a duplicate.

insert_skipping_present (hand-written SQL) and bulk_insert (SQL from the model's _meta).
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from events.core.bulk_insert import _statement, bulk_insert, insert_skipping_present
from events.models import DeadLetter, InboxEntry
from reservations.models import Notification

pytestmark = pytest.mark.django_db(transaction=True)

INSERT = """
    INSERT INTO events_inboxentry
        (event_id, handler, topic, partition, "offset", attempt, processed_at)
    SELECT id, %s, 't', 0, 0, 1, now() FROM unnest(%s::uuid[]) AS id
"""
SKIP = "ON CONFLICT (event_id, handler) DO NOTHING RETURNING event_id"


def _ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def test_new_rows_are_inserted_by_the_plain_insert() -> None:
    ids = _ids(3)
    assert insert_skipping_present(INSERT, SKIP, ["h", ids]) is None
    assert set(InboxEntry.objects.values_list("event_id", flat=True)) == set(ids)


def test_after_a_duplicate_the_other_rows_go_in_and_only_they_are_returned() -> None:
    old, new = _ids(2), _ids(2)
    insert_skipping_present(INSERT, SKIP, ["h", old])
    with transaction.atomic():
        returned = insert_skipping_present(INSERT, SKIP, ["h", [old[0], *new, old[1]]])
        # The failed plain insert was rolled back to its savepoint: the surrounding
        # transaction goes on.
        assert InboxEntry.objects.count() == 4
    assert returned is not None
    assert {row[0] for row in returned} == set(new)
    assert InboxEntry.objects.count() == 4


def test_a_repeat_inside_one_insert_is_stored_once() -> None:
    [one] = _ids(1)
    returned = insert_skipping_present(INSERT, SKIP, ["h", [one, one]])
    assert returned == [(one,)]
    assert InboxEntry.objects.filter(event_id=one).count() == 1


def test_other_integrity_errors_are_raised_not_skipped() -> None:
    # A NULL handler breaks NOT NULL, which ON CONFLICT would not skip either.
    with pytest.raises(IntegrityError):
        insert_skipping_present(INSERT, SKIP, [None, _ids(1)])
    assert not InboxEntry.objects.exists()
    with connection.cursor() as cursor:  # the connection is still usable
        cursor.execute("SELECT 1")


def test_one_row_goes_straight_to_the_skipping_form() -> None:
    [one] = _ids(1)
    assert insert_skipping_present(INSERT, SKIP, ["h", [one]], many=False) == [(one,)]
    assert insert_skipping_present(INSERT, SKIP, ["h", [one]], many=False) == []
    assert InboxEntry.objects.filter(event_id=one).count() == 1


# -- bulk_insert: the statement derived from the model --------------------------------


def _inbox_rows(ids: list[uuid.UUID], handler: str = "h") -> list[dict[str, object]]:
    return [
        {
            "event_id": event_id,
            "handler": handler,
            "topic": "t",
            "partition": 1,
            "offset": n,
            "attempt": 2,
        }
        for n, event_id in enumerate(ids)
    ]


def test_bulk_insert_writes_every_column_and_stamps_auto_now_add_fields() -> None:
    before = timezone.now()
    ids = _ids(3)
    result = bulk_insert(InboxEntry, _inbox_rows(ids))
    assert (result.given, result.written, result.skipped) == (3, 3, 0)
    assert result.returned == []
    rows = InboxEntry.objects.order_by("offset")
    assert [(r.event_id, r.offset, r.attempt) for r in rows] == [
        (event_id, n, 2) for n, event_id in enumerate(ids)
    ]
    assert all(r.processed_at >= before for r in rows), "processed_at is now()"


def test_bulk_insert_skips_present_rows_and_returns_only_those_it_inserted() -> None:
    old, new = _ids(2), _ids(2)
    bulk_insert(InboxEntry, _inbox_rows(old))
    returning = ("event_id", "handler")
    with transaction.atomic():
        result = bulk_insert(
            InboxEntry,
            _inbox_rows([old[0], *new, old[1]]),
            unique_fields=("event_id", "handler"),
            returning=returning,
        )
        # The failed plain insert was rolled back to its savepoint only.
        assert InboxEntry.objects.count() == 4
    assert (result.written, result.skipped) == (2, 2)
    assert sorted(result.returned) == sorted((e, "h") for e in new)


def test_bulk_insert_without_a_conflict_returns_every_row() -> None:
    ids = _ids(2)
    result = bulk_insert(
        InboxEntry,
        _inbox_rows(ids),
        unique_fields=("event_id", "handler"),
        returning=("event_id",),
    )
    assert sorted(result.returned) == sorted((e,) for e in ids)


@pytest.mark.parametrize("expect_conflicts", [False, True])
def test_one_row_or_expected_conflicts_go_straight_to_on_conflict(
    expect_conflicts: bool, django_assert_num_queries
) -> None:
    ids = _ids(1 if not expect_conflicts else 2)
    bulk_insert(InboxEntry, _inbox_rows(ids))
    # One statement, no savepoint: SAVEPOINT/RELEASE would be queries too.
    with django_assert_num_queries(1):
        result = bulk_insert(
            InboxEntry,
            _inbox_rows(ids),
            unique_fields=("event_id", "handler"),
            expect_conflicts=expect_conflicts,
        )
    assert (result.written, result.skipped) == (0, len(ids))


def test_a_unique_violation_without_unique_fields_is_raised() -> None:
    ids = _ids(1)
    bulk_insert(InboxEntry, _inbox_rows(ids))
    with pytest.raises(IntegrityError):
        bulk_insert(InboxEntry, _inbox_rows(ids))


def test_update_fields_upserts_and_reports_updated_rows_as_written() -> None:
    [one] = _ids(1)
    bulk_insert(InboxEntry, _inbox_rows([one]))
    row = {**_inbox_rows([one])[0], "topic": "moved", "attempt": 3}
    result = bulk_insert(
        InboxEntry,
        [row],
        unique_fields=("event_id", "handler"),
        update_fields=("topic", "attempt"),
        returning=("topic",),
    )
    assert (result.written, result.returned) == (1, [("moved",)])
    entry = InboxEntry.objects.get(event_id=one)
    assert (entry.topic, entry.attempt) == ("moved", 3)


def test_missing_fields_take_their_python_default_or_are_refused() -> None:
    [one] = _ids(1)
    [row] = _inbox_rows([one])
    del row["attempt"]  # default=1
    bulk_insert(InboxEntry, [row])
    assert InboxEntry.objects.get(event_id=one).attempt == 1
    del row["topic"]  # no default, not null
    with pytest.raises(ValueError, match="InboxEntry.topic has no default"):
        bulk_insert(InboxEntry, [row])


def test_rows_must_all_give_the_same_keys() -> None:
    rows = _inbox_rows(_ids(2))
    del rows[1]["attempt"]
    with pytest.raises(ValueError, match="every row must be a mapping of"):
        bulk_insert(InboxEntry, rows)
    assert not InboxEntry.objects.exists()


def test_instances_go_in_with_bytes_json_and_defaults_as_they_hold_them() -> None:
    letters = [
        DeadLetter(
            dlq_topic="dlq",
            dlq_partition=0,
            dlq_offset=n,
            key=b"\x00\xffk",
            value=b'{"a": 1}',
            headers=[["h", "v"]],
            payload={"a": [1, "x"]},
            replay_count=n,
        )
        for n in range(2)
    ]
    result = bulk_insert(DeadLetter, letters, returning=("id",))
    assert result.written == 2
    stored = DeadLetter.objects.order_by("dlq_offset")
    assert sorted(pk for (pk,) in result.returned) == [d.pk for d in stored]
    first = stored[0]
    assert bytes(first.key) == b"\x00\xffk" and bytes(first.value) == b'{"a": 1}'
    assert first.headers == [["h", "v"]] and first.payload == {"a": [1, "x"]}
    assert first.status == DeadLetter.Status.NEW and first.stored_at is not None
    assert [d.replay_count for d in stored] == [0, 1]


def test_a_foreign_key_may_be_given_by_name_as_an_instance() -> None:
    user = User.objects.create_user("bulk")
    result = bulk_insert(
        Notification,
        [{"user": user, "kind": "ticket_issued", "message": "m", "event_id": None}],
    )
    assert result.written == 1
    assert Notification.objects.get().user == user


def test_no_rows_is_no_statement(django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        result = bulk_insert(InboxEntry, [], unique_fields=("event_id", "handler"))
    assert (result.given, result.written, result.returned) == (0, 0, [])


def test_the_statement_is_built_once_per_model_and_keys() -> None:
    rows = _inbox_rows(_ids(1))
    bulk_insert(InboxEntry, rows)
    hits = _statement.cache_info().hits
    bulk_insert(InboxEntry, _inbox_rows(_ids(1)))
    assert _statement.cache_info().hits == hits + 1
