"""Notification kinds: what the handlers write is what the model and the schema allow."""

from __future__ import annotations

import orjson
import pytest
from django.db import IntegrityError, transaction
from drf_spectacular.generators import SchemaGenerator

from events.core.delivery import Delivery
from events.core.registry import handlers_accepting
from events.core.types import Envelope, decode
from events.models import OutboxEvent
from payments.services import payment_process, wallet_charge
from reservations.models import Notification, NotificationKind
from reservations.notifications import notification_create
from reservations.services import (
    reservation_cancel,
    reservation_create,
    seat_hold_expire_due,
)

pytestmark = pytest.mark.django_db


def deliver(row: OutboxEvent) -> list[str]:
    """Give an outbox event to every registered handler of its type, as the runner does.

    Returns the names of the handlers called.
    """
    envelope: Envelope = decode(orjson.dumps(row.payload))
    delivery = Delivery(
        envelope.event, envelope, row.key.encode(), row.topic, 0, row.pk, 1, None
    )
    called = []
    for spec in handlers_accepting(type(envelope.event).stream, envelope.event_type):
        spec.func([delivery] if spec.batch else delivery)
        called.append(spec.name)
    return called


def deliver_outbox() -> list[str]:
    """Deliver every outbox event in order; return the names of the handlers called."""
    return [name for row in OutboxEvent.objects.order_by("id") for name in deliver(row)]


def test_every_flow_writes_only_known_kinds_and_every_kind_is_written(
    user, performance
):
    wallet_charge(user=user, amount=1000)
    paid, cancelled, expired = performance.seats.order_by("id")[:3]

    reservation = reservation_create(user=user, seat_id=paid.pk)
    payment_process(user=user, reservation_id=reservation.pk)
    reservation = reservation_create(user=user, seat_id=cancelled.pk)
    reservation_cancel(user=user, reservation_id=reservation.pk)
    reservation = reservation_create(user=user, seat_id=expired.pk)
    assert seat_hold_expire_due(now=reservation.hold_expires_at) == 1
    handlers = deliver_outbox()

    # Every notifying handler of the project ran, so no kind escaped the walk.
    assert {
        "reservations.handlers.notify_reservation_created",
        "reservations.handlers.notify_reservation_cancelled",
        "reservations.handlers.notify_hold_expired",
        "payments.handlers.confirm_and_issue_ticket",
    } <= set(handlers)
    written = set(Notification.objects.values_list("kind", flat=True))
    assert written <= set(NotificationKind.values)
    assert written == set(NotificationKind.values)


def test_the_database_refuses_a_kind_outside_the_enum(user):
    with pytest.raises(IntegrityError), transaction.atomic():
        notification_create(user_id=user.pk, kind="payment_completed", message="x")


def test_the_schema_kind_enum_is_notification_kind():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    schemas = schema["components"]["schemas"]
    kind = schemas["Notification"]["properties"]["kind"]
    enum_schema = schemas[kind["$ref"].rsplit("/", 1)[-1]] if "$ref" in kind else kind

    assert enum_schema["enum"] == NotificationKind.values
