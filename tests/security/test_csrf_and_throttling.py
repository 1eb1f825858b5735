"""CSRF on every session write (API and the dead-letter admin); throttles on every write
and on the token endpoint.

tests/web/test_error_shape.py checks the refusal's JSON shape for one API write and
tests/reservations/test_throttling.py one write's throttle; these go over all of them,
taking the writes from the OpenAPI schema so a new one is covered (and needs a row in
the tables below).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from events.core.conf import pipeline_settings
from events.models import DeadLetter, DeadLetterAction
from payments.models import Payment, Wallet
from payments.services import wallet_charge
from reservations.models import Reservation, Seat
from reservations.services import reservation_create
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope
from tests.reservations.factories import make_performance, make_user
from tests.security.endpoints import schema_writes

pytestmark = pytest.mark.django_db

WRITES = schema_writes()


def api_state() -> tuple:
    return (
        list(Reservation.objects.order_by("id").values_list("id", "status")),
        list(Seat.objects.order_by("id").values_list("id", "status")),
        list(Wallet.objects.order_by("id").values_list("user", "balance")),
        Payment.objects.count(),
    )


class Scene:
    """A funded user with three held reservations and three free seats."""

    def __init__(self) -> None:
        self.user = make_user()
        wallet_charge(user=self.user, amount=1000)
        performance = make_performance(seats=6, price=100)
        seats = list(performance.seats.order_by("id"))
        self.held = [
            reservation_create(user=self.user, seat_id=s.pk) for s in seats[:3]
        ]
        self.free = seats[3:]

    def request(self, endpoint: str, n: int = 0) -> tuple[str, dict]:
        """The path and JSON body of the n-th (0-2) distinct request to `endpoint`."""
        path = endpoint.split(" ", 1)[1]
        reservation_id = self.held[n].pk
        body = {
            "POST /api/reservations/create/": {"seat_id": self.free[n].pk},
            "POST /api/reservations/{reservation_id}/cancel/": {},
            "POST /api/reservations/{reservation_id}/pay/": {},
            "POST /api/wallet/charge/": {"amount": 10},
        }[endpoint]
        return path.format(reservation_id=reservation_id), body


def test_the_schema_has_the_writes_these_tests_know() -> None:
    assert WRITES == [
        "POST /api/reservations/create/",
        "POST /api/reservations/{reservation_id}/cancel/",
        "POST /api/reservations/{reservation_id}/pay/",
        "POST /api/wallet/charge/",
    ]


# -- CSRF ---------------------------------------------------------------------------


def session_client(user: User) -> tuple[Client, str]:
    """A logged-in browser that checks CSRF, and its CSRF cookie's value."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/api/auth/login/")  # any page with a form sets the cookie
    return client, client.cookies["csrftoken"].value


@pytest.mark.parametrize("endpoint", WRITES)
def test_a_session_write_needs_the_csrf_token_and_works_with_it(endpoint) -> None:
    scene = Scene()
    client, token = session_client(scene.user)
    path, body = scene.request(endpoint)
    before = api_state()

    refused = client.post(path, body, content_type="application/json")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in refused.json()["error"]["message"]
    assert api_state() == before

    accepted = client.post(
        path, body, content_type="application/json", headers={"X-CSRFToken": token}
    )

    assert accepted.status_code in (200, 201), accepted.content[:300]
    assert api_state() != before


def test_a_csrf_token_from_another_session_is_refused() -> None:
    scene = Scene()
    _, foreign_token = session_client(make_user())
    client, _ = session_client(scene.user)
    path, body = scene.request("POST /api/wallet/charge/")
    before = api_state()

    response = client.post(
        path,
        body,
        content_type="application/json",
        headers={"X-CSRFToken": foreign_token},
    )

    assert response.status_code == 403
    assert api_state() == before


# The dead-letter admin's writes: (name, url name or changelist action, POST data).
ADMIN_WRITES = [
    ("resolve_one", {}, DeadLetter.Status.RESOLVED),
    ("discard_one", {}, DeadLetter.Status.DISCARDED),
    ("requeue_one", {"payload": ""}, DeadLetter.Status.REQUEUED),
    ("requeue_matching", {"confirm": "yes"}, DeadLetter.Status.REQUEUED),
    ("action requeue_selected", {}, DeadLetter.Status.REQUEUED),
    ("action resolve_selected", {}, DeadLetter.Status.RESOLVED),
    ("action discard_selected", {}, DeadLetter.Status.DISCARDED),
]


@pytest.mark.parametrize(
    ("write", "data", "status"), ADMIN_WRITES, ids=[w[0] for w in ADMIN_WRITES]
)
def test_a_dead_letter_admin_write_needs_the_csrf_token(
    request, admin_user, write, data, status
) -> None:
    if status == DeadLetter.Status.REQUEUED:
        request.getfixturevalue("fresh_topics")
    letter = make_dead_letter(pipeline_settings(), ping_envelope("csrf"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get(reverse("admin:events_deadletter_changelist"))
    token = client.cookies["csrftoken"].value
    if write.startswith("action "):
        url = reverse("admin:events_deadletter_changelist")
        data = {"action": write.removeprefix("action "), "_selected_action": letter.pk}
    elif write == "requeue_matching":
        url = reverse("admin:events_deadletter_requeue_matching")
    else:
        url = reverse(f"admin:events_deadletter_{write}", args=[letter.pk])

    refused = client.post(url, data)

    assert refused.status_code == 403
    assert b"CSRF" in refused.content
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.NEW
    assert not DeadLetterAction.objects.exists()

    accepted = client.post(url, {**data, "csrfmiddlewaretoken": token})

    assert accepted.status_code == 302, accepted.content[:300]
    letter.refresh_from_db()
    assert letter.status == status
    assert letter.actions.get().user == admin_user


# -- throttling -----------------------------------------------------------------------


def lower_rate(settings, scope: str, rate: str) -> None:  # noqa: ANN001
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            scope: rate,
        },
    }


@pytest.mark.parametrize("endpoint", WRITES)
def test_every_write_is_throttled_and_a_throttled_write_changes_nothing(
    settings, endpoint
) -> None:
    lower_rate(settings, "writes", "2/min")
    scene = Scene()
    client = Client()
    client.force_login(scene.user)

    def send(n: int):  # noqa: ANN202
        path, body = scene.request(endpoint, n)
        return client.post(path, body, content_type="application/json")

    assert [send(0).status_code, send(1).status_code] in ([201, 201], [200, 200])
    before = api_state()

    third = send(2)

    assert third.status_code == 429
    assert third.json()["error"]["code"] == "throttled"
    assert int(third["Retry-After"]) > 0
    assert api_state() == before


def test_the_write_budget_is_shared_by_all_write_endpoints(settings) -> None:
    """One client cannot get 4x the rate by spreading writes over the endpoints."""
    lower_rate(settings, "writes", "3/min")
    scene = Scene()
    client = Client()
    client.force_login(scene.user)
    statuses = []
    for endpoint in WRITES:
        path, body = scene.request(endpoint)
        statuses.append(
            client.post(path, body, content_type="application/json").status_code
        )

    assert 429 not in statuses[:3]
    assert statuses[3] == 429


def guess(client: Client, username: str, password: str, **headers: str):  # noqa: ANN201
    return client.post(
        "/api/auth/token/",
        {"username": username, "password": password},
        headers=headers,
    )


def test_the_token_endpoint_budget_cannot_be_renewed_with_x_forwarded_for(
    settings, user
) -> None:
    """Each guess claims another client address; the budget is still the sender's."""
    lower_rate(settings, "auth", "2/min")
    client = Client(REMOTE_ADDR="203.0.113.7")

    statuses = [
        guess(
            client, user.username, password, x_forwarded_for=f"198.51.100.{i}"
        ).status_code
        for i, password in enumerate(("a", "b"))
    ]
    right = guess(client, user.username, "password", x_forwarded_for="192.0.2.1")

    assert statuses == [400, 400]
    assert right.status_code == 429
    assert "token" not in right.json()


def test_the_token_endpoint_budget_is_per_client_address(settings, user) -> None:
    lower_rate(settings, "auth", "1/min")
    first = Client(REMOTE_ADDR="203.0.113.7")
    second = Client(REMOTE_ADDR="203.0.113.8")

    assert guess(first, user.username, "wrong").status_code == 400
    assert guess(first, user.username, "password").status_code == 429
    assert guess(second, user.username, "password").status_code == 200
