"""Who may call which API endpoint: the authorization matrix as a table.

Five actors (anonymous, user A, user B, staff, superuser) against every endpoint the
URL resolver has under /api/ (the OpenAPI schema's operations and the few views it
leaves out). Each of A, B, staff and superuser owns a paid reservation, a payment, a
notification and wallet transactions; A also holds a seat, and the per-object paths
name A's objects. Staff and superusers are plain users to the API: they see only
their own data too. Another user's object is "not found" (404, never 403: ids leak
nothing, see reservations/selectors.py), and a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from events.models import OutboxEvent
from payments.models import Payment, Wallet, WalletTransaction
from payments.services import payment_process, wallet_charge
from reservations.models import (
    Concert,
    Notification,
    NotificationKind,
    Reservation,
    Seat,
)
from reservations.notifications import notification_create
from reservations.services import reservation_create
from tests.reservations.factories import make_performance
from tests.security.endpoints import resolver_operations, schema_operations

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
ACTORS = ("anonymous", "a", "b", "staff", "superuser")

# Expected status of each endpoint for each actor. Paths with an id name user A's
# object; POST /api/reservations/create/ asks for the seat A holds; the login forms
# and the token endpoint get A's username and password.
# fmt: off
MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    # endpoint                                          anon   A    B  staff super
    "GET /api/":                                        (200, 200, 200, 200, 200),
    "GET /api/schema/":                                 (200, 200, 200, 200, 200),
    "GET /api/docs/":                                   (200, 200, 200, 200, 200),
    "GET /api/redoc/":                                  (200, 200, 200, 200, 200),
    "POST /api/auth/token/":                            (200, 200, 200, 200, 200),
    "GET /api/auth/login/":                             (200, 200, 200, 200, 200),
    "POST /api/auth/login/":                            (302, 302, 302, 302, 302),
    "PUT /api/auth/login/":                             (200, 200, 200, 200, 200),
    "POST /api/auth/logout/":                           (302, 302, 302, 302, 302),
    # the public catalog
    "GET /api/concerts/":                               (200, 200, 200, 200, 200),
    "GET /api/concerts/{concert_id}/":                  (200, 200, 200, 200, 200),
    "GET /api/performances/":                           (200, 200, 200, 200, 200),
    "GET /api/performances/{performance_id}/":          (200, 200, 200, 200, 200),
    "GET /api/performances/{performance_id}/seats/":    (200, 200, 200, 200, 200),
    # one's own data: lists show exactly the caller's rows
    "GET /api/reservations/":                           (401, 200, 200, 200, 200),
    "GET /api/reservations/{reservation_id}/":          (401, 200, 404, 404, 404),
    "GET /api/payments/":                               (401, 200, 200, 200, 200),
    "GET /api/payments/{payment_id}/":                  (401, 200, 404, 404, 404),
    "GET /api/notifications/":                          (401, 200, 200, 200, 200),
    "GET /api/wallet/":                                 (401, 200, 200, 200, 200),
    "GET /api/wallet/transactions/":                    (401, 200, 200, 200, 200),
    # writes
    "POST /api/reservations/create/":                   (401, 409, 409, 409, 409),
    "POST /api/reservations/{reservation_id}/cancel/":  (401, 200, 404, 404, 404),
    "POST /api/reservations/{reservation_id}/pay/":     (401, 201, 404, 404, 404),
    "POST /api/wallet/charge/":                         (401, 200, 200, 200, 200),
}
# fmt: on

# Endpoints whose 2xx for A must change A's data (so the "unchanged" check can fail).
CHANGES_A = {
    "POST /api/reservations/{reservation_id}/cancel/",
    "POST /api/reservations/{reservation_id}/pay/",
    "POST /api/wallet/charge/",
}
# List endpoints: which of the actor's own ids the page must show, exactly.
LISTS = {
    "GET /api/reservations/": "reservations",
    "GET /api/payments/": "payments",
    "GET /api/notifications/": "notifications",
    "GET /api/wallet/transactions/": "transactions",
}
# Not the API's JSON: Django's login views and the HTML doc pages.
FORM_ENDPOINTS = {
    "POST /api/auth/login/",
    "PUT /api/auth/login/",
    "POST /api/auth/logout/",
}

CASES = [
    pytest.param(endpoint, actor, expected[i], id=f"{actor}-{endpoint}")
    for endpoint, expected in MATRIX.items()
    for i, actor in enumerate(ACTORS)
]


@dataclass
class World:
    users: dict[str, User]
    tokens: dict[str, str]
    concert_id: int
    performance_id: int
    held: Reservation  # A's unpaid hold
    payment: Payment  # A's payment
    own: dict[str, dict[str, set[int]]] = field(default_factory=dict)

    def path(self, template: str) -> str:
        return template.format(
            concert_id=self.concert_id,
            performance_id=self.performance_id,
            reservation_id=self.held.pk,
            payment_id=self.payment.pk,
        )

    def body(self, endpoint: str) -> dict:
        credentials = {"username": self.users["a"].username, "password": PASSWORD}
        return {
            "POST /api/auth/token/": credentials,
            "POST /api/auth/login/": credentials,
            "PUT /api/auth/login/": credentials,
            "POST /api/reservations/create/": {"seat_id": self.held.seat_id},
            "POST /api/wallet/charge/": {"amount": 50},
        }.get(endpoint, {})


def make_user(name: str, **flags: bool) -> User:
    user = User.objects.create_user(name, password=PASSWORD, **flags)
    if flags.get("is_staff") and not flags.get("is_superuser"):
        # Staff who may look at the pipeline in the admin, and nothing more.
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="events", codename__startswith="view_"
            )
        )
    return user


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:  # noqa: ANN001
    """The same rows for every case, committed once; each case's changes roll back."""
    with django_db_blocker.unblock():
        outbox_mark = OutboxEvent.objects.order_by("-id").values_list("id", flat=True)
        outbox_mark = outbox_mark.first() or 0
        with transaction.atomic():
            built = build_world()
    try:
        yield built
    finally:
        with django_db_blocker.unblock(), transaction.atomic():
            users = list(built.users.values())
            WalletTransaction.objects.filter(wallet__user__in=users).delete()
            Payment.objects.filter(user__in=users).delete()
            User.objects.filter(pk__in=[u.pk for u in users]).delete()
            Concert.objects.filter(pk=built.concert_id).delete()
            OutboxEvent.objects.filter(id__gt=outbox_mark).delete()


def build_world() -> World:
    performance = make_performance(seats=8, price=100)
    seats = iter(performance.seats.order_by("id"))
    users = {
        "a": make_user("user-a"),
        "b": make_user("user-b"),
        "staff": make_user("staff", is_staff=True),
        "superuser": make_user("root", is_staff=True, is_superuser=True),
    }
    own: dict[str, dict[str, set[int]]] = {}
    payments = {}
    for actor, user in users.items():
        wallet_charge(user=user, amount=1000)
        paid = reservation_create(user=user, seat_id=next(seats).pk)
        payments[actor] = payment_process(user=user, reservation_id=paid.pk)
        note = notification_create(
            user_id=user.pk, kind=NotificationKind.RESERVATION_CREATED, message="hi"
        )
        own[actor] = {
            "reservations": {paid.pk},
            "payments": {payments[actor].pk},
            "notifications": {note.pk},
        }
    held = reservation_create(user=users["a"], seat_id=next(seats).pk)
    own["a"]["reservations"].add(held.pk)
    for actor, user in users.items():
        own[actor]["transactions"] = set(
            WalletTransaction.objects.filter(wallet__user=user).values_list(
                "pk", flat=True
            )
        )
    return World(
        users=users,
        tokens={a: Token.objects.create(user=u).key for a, u in users.items()},
        concert_id=performance.concert_id,
        performance_id=performance.pk,
        held=held,
        payment=payments["a"],
        own=own,
    )


def state_of_a(world: World) -> tuple:
    """Everything of A's that another actor could change."""
    user = world.users["a"]
    return (
        list(
            Reservation.objects.filter(user=user)
            .order_by("id")
            .values_list("id", "status", "paid_at", "cancelled_at")
        ),
        list(
            Seat.objects.filter(reservations__user=user)
            .order_by("id")
            .values_list("id", "status")
        ),
        Wallet.objects.get(user=user).balance,
        sorted(Payment.objects.filter(user=user).values_list("id", flat=True)),
        WalletTransaction.objects.filter(wallet__user=user).count(),
    )


def state_of_everything() -> tuple:
    return (
        list(Reservation.objects.order_by("id").values_list("id", "user", "status")),
        list(Seat.objects.order_by("id").values_list("id", "status")),
        list(Wallet.objects.order_by("id").values_list("user", "balance")),
        Payment.objects.count(),
        WalletTransaction.objects.count(),
        Notification.objects.count(),
        OutboxEvent.objects.count(),
    )


def call(world: World, endpoint: str, actor: str):  # noqa: ANN201
    method, template = endpoint.split(" ", 1)
    client = APIClient()
    if actor != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[actor]}")
    send = getattr(client, method.lower())
    path = world.path(template)
    if method == "GET":
        return send(path)
    if endpoint in FORM_ENDPOINTS:
        return send(path, world.body(endpoint))
    return send(path, world.body(endpoint), format="json")


def test_every_api_endpoint_has_a_row_in_the_matrix() -> None:
    endpoints = schema_operations() | resolver_operations()
    assert endpoints - set(MATRIX) == set(), "endpoints without a row in MATRIX"
    assert set(MATRIX) - endpoints == set(), "rows for endpoints that do not exist"
    assert schema_operations() <= resolver_operations()


@pytest.mark.parametrize(("endpoint", "actor", "expected"), CASES)
def test_authorization_matrix(world, endpoint, actor, expected) -> None:
    before_a, before_all = state_of_a(world), state_of_everything()

    response = call(world, endpoint, actor)

    assert response.status_code == expected, response.content[:300]
    if expected == 401:
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response["WWW-Authenticate"] == "Token"
    if expected == 404:
        assert response.json()["error"]["code"] == "not_found"
    if expected >= 400:
        assert state_of_everything() == before_all, "a refused request changed data"
    if actor != "a":
        assert state_of_a(world) == before_a, f"{actor} changed A's data"
    elif endpoint in CHANGES_A:
        assert state_of_a(world) != before_a
    if expected == 200 and endpoint in LISTS:
        shown = {row["id"] for row in response.json()["results"]}
        assert shown == world.own[actor][LISTS[endpoint]]
    if expected == 200 and endpoint == "GET /api/wallet/":
        own = Wallet.objects.get(user=world.users[actor]).balance
        assert response.json()["balance"] == own
    if expected == 200 and "{reservation_id}" in endpoint:
        assert response.json()["id"] == world.held.pk
    if expected == 200 and endpoint == "GET /api/payments/{payment_id}/":
        assert response.json()["id"] == world.payment.pk


def test_other_users_get_the_same_404_as_for_an_id_that_does_not_exist(
    world,
) -> None:
    """A 404 for someone else's object must not differ from a 404 for no object."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens['b']}")
    missing = Reservation.objects.order_by("-id").first().pk + 1000
    for template in (
        "/api/reservations/{}/",
        "/api/reservations/{}/cancel/",
        "/api/reservations/{}/pay/",
    ):
        method = client.get if template.count("/") == 4 else client.post
        theirs = method(template.format(world.held.pk)).json()["error"]
        nothing = method(template.format(missing)).json()["error"]
        assert theirs["code"] == nothing["code"] == "not_found"
        assert theirs["message"] == nothing["message"]
        assert set(theirs["details"]) == set(nothing["details"])
