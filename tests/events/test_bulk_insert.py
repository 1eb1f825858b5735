"""insert_skipping_present: the plain insert first, ON CONFLICT only after a duplicate."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from events.core.bulk_insert import insert_skipping_present
from events.models import InboxEntry

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
