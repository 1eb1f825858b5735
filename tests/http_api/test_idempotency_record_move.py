"""IdempotencyRecord moved from reservations to http_api without touching its rows."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from http_api.models import IdempotencyRecord

RESERVATIONS_BEFORE = ("reservations", "0004_idempotency_response_as_bytes")
# The targets of a database migrated at the code before the move.
BEFORE_MOVE = [RESERVATIONS_BEFORE, ("http_api", None)]
TABLE = "reservations_idempotencyrecord"


def tables() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


@pytest.mark.django_db(transaction=True)
def test_a_database_migrated_before_the_move_keeps_its_records_and_content_type(
    user,
):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_MOVE)
    try:
        old_state = executor.loader.project_state(RESERVATIONS_BEFORE).apps
        old_model = old_state.get_model("reservations", "IdempotencyRecord")
        # As the old code's post_migrate left it (contenttypes is not rolled back).
        ContentType.objects.filter(model="idempotencyrecord").delete()
        content_type = ContentType.objects.create(
            app_label="reservations", model="idempotencyrecord"
        )
        record = old_model.objects.create(
            user_id=user.pk,
            scope="reservation-create",
            key="before-the-move",
            fingerprint="f",
            response_status=201,
            response_content=b'{"id":1}',
            response_content_type="application/json",
        )

        MigrationExecutor(connection).migrate(
            [("reservations", "0005_idempotencyrecord_to_http_api")]
        )
    finally:
        call_command("migrate", verbosity=0)

    moved = IdempotencyRecord.objects.get(key="before-the-move")
    assert moved.pk == record.pk
    assert bytes(moved.response_content) == b'{"id":1}'
    assert moved.response_content_type == "application/json"
    assert IdempotencyRecord._meta.db_table == TABLE
    assert TABLE in tables()
    assert "http_api_idempotencyrecord" not in tables()
    ContentType.objects.clear_cache()
    assert ContentType.objects.get(pk=content_type.pk).app_label == "http_api"
    assert not ContentType.objects.filter(
        app_label="reservations", model="idempotencyrecord"
    ).exists()
