"""Nothing secret reaches the logs: passwords, API tokens, session ids, credentials.

One whole flow is logged at DEBUG, every logger included (events.audit, which does not
propagate, too): logging in for a token and a session, failed logins, charging the
wallet, reserving and paying through the API, then the relay and a consumer carrying
the events to the handlers. Every record is formatted as the JSON log line would be
(message, arguments and every `extra` field) and searched for the secrets.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from config.logging import JsonFormatter
from reservations.models import Notification, Reservation
from tests.events.pipeline import running_consumer
from tests.events.relay_process import running_relay
from tests.reservations.factories import make_performance
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def all_logs(caplog) -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG, for the test's duration."""
    collect = Collect()
    names = [""] + sorted(logging.root.manager.loggerDict)
    for name in names:
        logger = logging.getLogger(name)
        if name == "" or logger.level != logging.NOTSET:
            caplog.set_level(logging.DEBUG, logger=name)
    # Attached to the root and to every logger that does not pass records up.
    holders = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in names
        if name and not logging.getLogger(name).propagate
    ]
    for logger in holders:
        logger.addHandler(collect)
    try:
        yield collect.records
    finally:
        for logger in holders:
            logger.removeHandler(collect)


def rendered(record: logging.LogRecord) -> str:
    """The record as the JSON log line, plus its raw arguments and extra fields."""
    return "\n".join(
        [
            JsonFormatter().format(record),
            repr(record.args),
            repr({k: str(v) for k, v in record.__dict__.items()}),
        ]
    )


def test_a_whole_flow_logs_no_password_token_or_session(fresh_topics, all_logs):
    password = secrets.token_urlsafe(18)
    wrong_password = secrets.token_urlsafe(18)
    user = User.objects.create_user("logged-user", password=password)
    performance = make_performance(seats=2, price=100)
    seat = performance.seats.order_by("id").first()
    client = Client()

    assert (
        client.post(
            "/api/auth/token/", {"username": user.username, "password": wrong_password}
        ).status_code
        == 400
    )
    issued = client.post(
        "/api/auth/token/", {"username": user.username, "password": password}
    )
    assert issued.status_code == 200
    token = issued.json()["token"]
    basic = base64.b64encode(f"{user.username}:{password}".encode()).decode()
    assert (
        client.get(
            "/api/reservations/", headers={"Authorization": f"Basic {basic}"}
        ).status_code
        == 401
    )
    assert (
        client.get(
            "/api/reservations/", headers={"Authorization": f"Bearer {token}x"}
        ).status_code
        == 401
    )
    bearer = {"Authorization": f"Bearer {token}"}
    header = {"Authorization": f"Token {token}"}

    with running_relay(poll_interval=0.2), running_consumer():
        charged = client.post(
            "/api/wallet/charge/",
            {"amount": 500},
            content_type="application/json",
            headers=header,
        )
        assert charged.status_code == 200, charged.content
        reserved = client.post(
            "/api/reservations/create/",
            {"seat_id": seat.pk},
            content_type="application/json",
            headers={**bearer, "Idempotency-Key": "log-test-1"},
        )
        assert reserved.status_code == 201, reserved.content
        reservation_id = reserved.json()["id"]
        paid = client.post(
            f"/api/reservations/{reservation_id}/pay/",
            content_type="application/json",
            headers=header,
        )
        assert paid.status_code == 201, paid.content
        wait_until(
            lambda: Reservation.objects.get(pk=reservation_id).status == "CONFIRMED",
            what="the payment to be handled",
        )
        wait_until(
            lambda: Notification.objects.filter(user=user, kind="ticket_issued"),
            what="the ticket notification",
        )

    browser = Client()
    login = browser.post(
        "/api/auth/login/", {"username": user.username, "password": password}
    )
    assert login.status_code == 302
    session_id = browser.cookies["sessionid"].value
    assert browser.get("/api/reservations/").status_code == 200

    lines = [rendered(record) for record in all_logs]
    secrets_sent = {
        "password": password,
        "wrong password": wrong_password,
        "API token": token,
        "Basic credentials": basic,
        "session id": session_id,
    }
    leaks = {
        what: [line[:300] for line in lines if value in line]
        for what, value in secrets_sent.items()
    }
    assert {what: found for what, found in leaks.items() if found} == {}

    # The capture saw what there was to see: the audit trail of the relay and the
    # consumer, and Django's request warnings that carry the request.
    outcomes = {getattr(r, "event_outcome", None) for r in all_logs}
    assert {"published", "processed"} <= outcomes
    assert any(
        r.name == "django.request" and "Unauthorized" in r.getMessage()
        for r in all_logs
    )
    assert any(r.levelno == logging.DEBUG for r in all_logs)
