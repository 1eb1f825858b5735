"""Logging in: a token for a username and password, or a session for the browser."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client()


def test_a_user_gets_a_token_for_their_password_and_reaches_the_api(
    client, user
) -> None:
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": "password"}
    )

    assert response.status_code == 200
    token = response.json()["token"]
    again = client.post(
        "/api/auth/token/", {"username": user.username, "password": "password"}
    )
    assert again.json()["token"] == token
    listing = client.get(
        "/api/reservations/", headers={"Authorization": f"Token {token}"}
    )
    assert listing.status_code == 200


def test_a_wrong_password_gets_a_400_error_body_and_no_token(client, user) -> None:
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": "wrong"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "token" not in response.json()


def test_the_token_endpoint_is_throttled(client, user, settings) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "auth": "2/min",
        },
    }
    guesses = [
        client.post("/api/auth/token/", {"username": user.username, "password": p})
        for p in ("a", "b", "password")
    ]

    assert [r.status_code for r in guesses] == [400, 400, 429]
    assert guesses[2].json()["error"]["code"] == "throttled"
    assert int(guesses[2]["Retry-After"]) > 0


def test_a_session_login_reaches_the_browsable_api(client, user) -> None:
    page = client.get("/api/auth/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content

    client = Client(enforce_csrf_checks=True)
    client.get("/api/auth/login/")
    response = client.post(
        "/api/auth/login/",
        {
            "username": user.username,
            "password": "password",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )

    assert response.status_code == 302
    assert client.get("/api/reservations/").status_code == 200


def test_the_schema_documents_token_and_session_authentication() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)

    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["in"] == "header"
    assert "/api/auth/token/" in schemes["tokenAuth"]["description"]
    assert schemes["cookieAuth"]["in"] == "cookie"
    assert "/api/auth/login/" in schemes["cookieAuth"]["description"]
    # The token endpoint needs no authentication; the others name both schemes.
    assert "security" not in schema
    assert "security" not in schema["paths"]["/api/auth/token/"]["post"]
    assert schema["paths"]["/api/reservations/"]["get"]["security"] == [
        {"tokenAuth": []},
        {"cookieAuth": []},
    ]
    token_input = schema["components"]["schemas"]["AuthTokenInput"]
    assert set(token_input["properties"]) == {"username", "password"}


def test_seed_demo_prints_each_demo_users_working_token(client) -> None:
    out = StringIO()
    call_command("seed_demo", stdout=out)

    tokens = dict(re.findall(r"^token +(\w+) +(\w{40})$", out.getvalue(), re.M))
    assert set(tokens) == {"alice", "bob", "carol"}
    response = client.get(
        "/api/wallet/", headers={"Authorization": f"Token {tokens['alice']}"}
    )
    assert response.status_code == 200
    assert response.json()["balance"] == 500_000
