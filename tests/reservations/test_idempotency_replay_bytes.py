"""An idempotent replay is the first response again: same status, same bytes."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from http_api.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

CREATE_URL = reverse("reservations:reservation-create")


def session_client(user) -> Client:
    """Django's own test client: the whole middleware and DRF stack, real bytes out."""
    client = Client()
    client.force_login(user)
    return client


def post(client: Client, seat_id: int, key: str = "replay-1"):
    return client.post(
        CREATE_URL,
        json.dumps({"seat_id": seat_id}),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def jsonb_order(keys: list[str]) -> list[str]:
    """The order PostgreSQL's jsonb keeps object keys in: shorter first, then bytes."""
    return sorted(keys, key=lambda k: (len(k.encode()), k.encode()))


def assert_same_response(first, second) -> None:
    assert second.status_code == first.status_code
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"]
    assert second["Allow"] == first["Allow"]
    assert second["Vary"] == first["Vary"]
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")


def test_a_replayed_201_has_the_first_response_s_bytes(user, seat):
    client = session_client(user)

    first = post(client, seat.pk)
    second = post(client, seat.pk)

    assert first.status_code == 201
    # The serializer's field order, which a jsonb round trip would not keep.
    keys = list(json.loads(first.content))
    assert keys[:3] == ["id", "status", "seat"]
    assert keys != jsonb_order(keys)
    assert_same_response(first, second)
    record = IdempotencyRecord.objects.get(key="replay-1")
    assert bytes(record.response_content) == first.content
    assert record.response_content_type == first["Content-Type"]


def test_a_replayed_409_has_the_first_response_s_bytes(user, other_user, seat):
    session_client(user).post(
        CREATE_URL, json.dumps({"seat_id": seat.pk}), content_type="application/json"
    )
    theirs = session_client(other_user)

    first = post(theirs, seat.pk, key="conflict")
    second = post(theirs, seat.pk, key="conflict")

    assert first.status_code == 409
    error_keys = list(json.loads(first.content)["error"])
    assert error_keys == ["code", "message", "details"]
    assert error_keys != jsonb_order(error_keys)
    assert_same_response(first, second)


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_stored_json_bodies_into_replayable_bytes(user):
    before = [("reservations", "0003_notification_kinds_written_by_handlers")]
    after = [("reservations", "0004_idempotency_response_as_bytes")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps.get_model(
            "reservations", "IdempotencyRecord"
        )
        body = {"id": 7, "status": "PENDING", "ticket_code": None, "name": "caf\u00e9"}
        old.objects.create(
            user_id=user.pk,
            scope="reservation-create",
            key="old-body",
            fingerprint="f",
            response_status=201,
            response_body=body,
        )
        old.objects.create(
            user_id=user.pk, scope="reservation-create", key="no-body", fingerprint="f"
        )

        executor = MigrationExecutor(connection)
        executor.migrate(after)
    finally:
        call_command("migrate", verbosity=0)

    converted = IdempotencyRecord.objects.get(key="old-body")
    assert converted.response_status == 201
    assert converted.response_content_type == "application/json"
    assert json.loads(bytes(converted.response_content)) == body
    pending = IdempotencyRecord.objects.get(key="no-body")
    assert pending.response_content is None
    assert pending.response_content_type == ""
