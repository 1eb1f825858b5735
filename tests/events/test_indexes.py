"""The hot tables carry only the indexes they need: each is paid for on every event."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def _indexes(table: str) -> dict[tuple[str, ...], str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    # Unique constraints are indexes too (introspection lists them apart).
    return {
        tuple(c["columns"]): c.get("type") or "unique"
        for c in constraints.values()
        if c["index"] or c["unique"]
    }


def test_notifications_have_no_user_index_beside_the_unique_one_that_starts_with_it():
    indexes = _indexes("reservations_notification")
    assert ("user_id",) not in indexes
    assert ("user_id", "kind", "event_id") in indexes
