"""Throttle budgets are per client across every gunicorn worker, and a throttle whose
cache (Redis) is down lets requests through instead of failing them."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.reservations.factories import make_user
from tests.web.server import running_gunicorn

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_token_endpoints_budget_is_shared_by_all_workers(
    subprocess_env: dict[str, str],
) -> None:
    user = make_user()
    server = running_gunicorn(
        GUNICORN_WORKERS="4",
        API_AUTH_THROTTLE_RATE="3/min",
        CACHE_URL="redis://127.0.0.1:6379/1",
        CACHE_KEY_PREFIX=f"test-{uuid.uuid4().hex[:8]}",
    )
    with server as url:
        # A new connection per request, so the requests spread over the workers.
        statuses = [
            httpx.post(
                f"{url}/api/auth/token/",
                data={"username": user.username, "password": "wrong"},
                headers={"Connection": "close"},
            ).status_code
            for _ in range(8)
        ]

    assert statuses == [400, 400, 400] + [429] * 5


def test_a_write_goes_through_while_the_throttles_cache_is_down(
    subprocess_env: dict[str, str],
) -> None:
    user = make_user()
    server = running_gunicorn(GUNICORN_WORKERS="1", CACHE_URL="redis://127.0.0.1:9/1")
    with server as url:
        response = httpx.post(
            f"{url}/api/auth/token/",
            data={"username": user.username, "password": "password"},
        )

    assert response.status_code == 200
    assert response.json()["token"]
