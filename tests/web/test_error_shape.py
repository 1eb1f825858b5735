"""Every error under /api/ has the API's JSON body; other paths keep Django's pages."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import Client, RequestFactory
from rest_framework.authtoken.models import Token

from config.error_views import bad_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def token(user) -> str:  # noqa: ANN001
    return Token.objects.create(user=user).key


def error_of(response) -> dict:  # noqa: ANN001
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = json.loads(response.content)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/nope/"),
        ("get", "/api/reservations/abc/"),
        ("get", "/api/reservations/abc/cancel/"),
        ("post", "/api/nope/"),
        ("delete", "/api/concerts/x/"),
    ],
)
def test_unknown_paths_and_bad_ids_are_json_404s(client, method, path) -> None:
    response = getattr(client, method)(path)

    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found"
    assert error["details"]["path"] == path


def test_a_path_missing_its_slash_says_which_one_was_meant(client) -> None:
    response = client.get("/api/reservations")

    assert response.status_code == 404
    assert error_of(response)["details"]["did_you_mean"] == "/api/reservations/"


def test_unknown_paths_outside_the_api_keep_djangos_page(client) -> None:
    response = client.get("/nope/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_method_not_allowed_is_405(client) -> None:
    response = client.delete("/api/performances/")

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_an_unsupported_body_type_is_415(client, token) -> None:
    response = client.post(
        "/api/reservations/create/",
        data="seat_id=1",
        content_type="text/plain",
        headers={"Authorization": f"Token {token}"},
    )

    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_a_body_over_the_limit_is_413_before_anything_reads_it(
    client, token, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(
        "/api/reservations/create/",
        data='{"seat_id": 1, "pad": "' + "x" * 2000 + '"}',
        content_type="application/json",
        headers={"Authorization": f"Token {token}"},
    )

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "request_too_large"
    assert error["details"] == {"max_bytes": 1000}


def test_a_body_found_too_large_while_read_is_413_too() -> None:
    request = RequestFactory().post("/api/reservations/create/")

    response = bad_request(request, RequestDataTooBig("too big"))

    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


@pytest.mark.urls("tests.web.failing_urls")
def test_an_unexpected_error_under_the_api_is_a_json_500(client) -> None:
    response = client.get("/api/test/crash/")

    assert response.status_code == 500
    assert error_of(response)["code"] == "server_error"


@pytest.mark.urls("tests.web.failing_urls")
def test_an_unexpected_error_outside_the_api_keeps_djangos_500(client) -> None:
    response = client.get("/test/crash/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.web.failing_urls")
@pytest.mark.parametrize(
    "path", ["/api/test/database-gone/", "/api/test/database-gone-drf/"]
)
def test_a_database_error_is_a_json_503_with_retry_after(client, path) -> None:
    response = client.get(path)

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert error_of(response)["code"] == "database_unavailable"


@pytest.mark.urls("tests.web.failing_urls")
def test_a_database_error_outside_the_api_is_a_plain_503(client) -> None:
    response = client.get("/test/database-gone/")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response["Content-Type"].startswith("text/plain")


def test_basic_credentials_get_a_401_that_says_what_to_send(client) -> None:
    response = client.get(
        "/api/reservations/", headers={"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}
    )

    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "unsupported_authentication_scheme"
    assert "'Basic'" in error["message"]
    assert "/api/auth/token/" in error["message"]
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
def test_a_token_is_accepted_as_token_or_bearer(client, token, scheme) -> None:
    response = client.get(
        "/api/reservations/", headers={"Authorization": f"{scheme} {token}"}
    )

    assert response.status_code == 200


def test_a_wrong_token_is_a_401(client) -> None:
    response = client.get(
        "/api/reservations/", headers={"Authorization": "Bearer not-a-token"}
    )

    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_a_session_write_without_csrf_token_is_refused(user, seat) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(
        "/api/reservations/create/",
        data={"seat_id": seat.pk},
        content_type="application/json",
    )

    assert response.status_code == 403
    assert "CSRF" in error_of(response)["message"]
    assert not seat.reservations.exists()
