"""Structured logs: a request's W3C trace id reaches the handler's JSON log lines."""

from __future__ import annotations

import json
import logging

import pytest
from rest_framework.test import APIClient

import reservations.handlers
from config.logging import JsonFormatter
from events.core.tracing import reset_trace_id, set_trace_id
from payments.services import wallet_charge
from reservations.models import Reservation
from tests.events.pipeline import running_consumer
from tests.events.relay_process import running_relay
from tests.ops.capture import json_log_lines
from tests.reservations.factories import make_performance, make_user
from tests.waiting import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_json_formatter_writes_one_object_with_extra_fields_and_trace_id() -> None:
    record = logging.LogRecord(
        "events.audit", logging.INFO, __file__, 1, "event %s", ("processed",), None
    )
    record.topic = "t"
    record.partition = 2
    token = set_trace_id(TRACE_ID)
    try:
        line = JsonFormatter().format(record)
    finally:
        reset_trace_id(token)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "event processed"
    assert data["logger"] == "events.audit"
    assert data["trace_id"] == TRACE_ID
    assert (data["topic"], data["partition"]) == ("t", 2)


@pytest.mark.django_db
def test_response_carries_the_incoming_trace_id_or_a_new_one(client) -> None:
    echoed = client.get("/healthz", HTTP_TRACEPARENT=TRACEPARENT)
    assert echoed["traceparent"].split("-")[1] == TRACE_ID

    fresh = client.get("/healthz", HTTP_TRACEPARENT="garbage")
    version, trace_id, span_id, flags = fresh["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
    assert trace_id != TRACE_ID


@pytest.mark.django_db(transaction=True)
def test_trace_id_of_the_api_request_reaches_the_handler_log_lines(
    fresh_topics, monkeypatch
) -> None:
    handler_log = logging.getLogger("reservations.handlers")
    complete = reservations.handlers.reservation_complete

    def logging_complete(*, reservation_id: int) -> Reservation:
        handler_log.info("completing reservation %s", reservation_id)
        return complete(reservation_id=reservation_id)

    monkeypatch.setattr(reservations.handlers, "reservation_complete", logging_complete)
    performance = make_performance(seats=1, price=100)
    seat = performance.seats.get()
    user = make_user()
    wallet_charge(user=user, amount=500)
    api = APIClient()
    api.force_authenticate(user)

    with (
        json_log_lines("events.audit") as logs,
        running_relay(poll_interval=0.2),
        running_consumer(),
    ):
        response = api.post(
            "/api/reservations/create/",
            {"seat_id": seat.pk},
            format="json",
            HTTP_TRACEPARENT=TRACEPARENT,
        )
        assert response.status_code == 201, response.content
        assert response["traceparent"].split("-")[1] == TRACE_ID
        reservation_id = response.json()["id"]
        processed = wait_until(
            lambda: logs.where(event_outcome="processed", event_type="SeatReserved"),
            what="the SeatReserved audit line",
        )

    (handler_line,) = logs.where(
        logger="reservations.handlers",
        message=f"completing reservation {reservation_id}",
    )
    assert handler_line["trace_id"] == TRACE_ID
    (line,) = processed
    assert line["trace_id"] == TRACE_ID
    assert line["topic"] == fresh_topics.topic("seat-reserved")
    assert line["handler"].endswith("complete_reservation")
    assert isinstance(line["partition"], int) and isinstance(line["offset"], int)
    published = logs.where(event_outcome="published", event_id=line["event_id"])
    assert [(p["trace_id"], p["partition"], p["offset"]) for p in published] == [
        (TRACE_ID, line["partition"], line["offset"])
    ]
    # Every event of the request (SeatReserved, ReservationCreated) has that trace id.
    audit_lines = logs.where(logger="events.audit", trace_id=TRACE_ID)
    assert {p["event_type"] for p in audit_lines} == {
        "SeatReserved",
        "ReservationCreated",
    }


def test_a_log_line_orjson_refuses_is_still_written_as_json() -> None:
    # orjson stops at 64-bit integers; such a value must not cost the line.
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "big %s", ("x",), None)
    record.big = 2**70
    record.by_number = {1: "one"}
    line = json.loads(JsonFormatter().format(record))
    assert line["big"] == 2**70 and line["message"] == "big x"
