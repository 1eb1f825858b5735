"""Kafka handlers of the payments stream: confirm, issue the ticket, notify."""

from __future__ import annotations

from events.core.delivery import Delivery
from events.core.registry import handler
from events.core.types import PoisonMessage
from http_api.errors import NotFound
from payments.events import PaymentCompleted
from reservations.errors import InvalidState
from reservations.models import NotificationKind
from reservations.notifications import notification_create
from reservations.services import reservation_confirm


@handler("payment-complete", events=[PaymentCompleted])
def confirm_and_issue_ticket(delivery: Delivery[PaymentCompleted]) -> None:
    """The report's KafkaPaymentConsumer: confirm the reservation, issue a ticket, notify."""
    event = delivery.event
    try:
        ticket = reservation_confirm(reservation_id=event.reservation_id)
    except (NotFound, InvalidState) as exc:
        raise PoisonMessage(
            f"reservation {event.reservation_id} cannot be confirmed: {exc}"
        ) from exc
    notification_create(
        user_id=event.user_id,
        kind=NotificationKind.TICKET_ISSUED,
        message=f"Payment received; your ticket is {ticket.code}.",
        event_id=delivery.event_id,
    )
