"""Under gunicorn, a database that is busy or gone means a JSON 503 with Retry-After.

Real parts: gunicorn with the project's config, psycopg's pool, PostgreSQL's locks.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from reservations.models import Seat
from tests.reservations.factories import make_performance, make_user
from tests.waiting import wait_until
from tests.web.server import running_gunicorn

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0]


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_a_request_that_finds_the_pool_empty_gets_503_and_the_server_recovers(
    subprocess_env: dict[str, str],
) -> None:
    seat = make_performance(seats=1).seats.get()
    token = Token.objects.create(user=make_user()).key
    # One worker, two threads, one pooled connection: the second request must wait.
    server = running_gunicorn(
        GUNICORN_WORKERS="1",
        GUNICORN_THREADS="2",
        DATABASE_POOL_MAX_SIZE="1",
        DATABASE_POOL_TIMEOUT="0.5",
    )
    with server as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/performances/").status_code == 200
        holder: dict[str, httpx.Response] = {}
        with transaction.atomic():
            Seat.objects.select_for_update().get(pk=seat.pk)
            # This request takes the only connection and waits for our row lock.
            reserve = threading.Thread(
                target=lambda: holder.update(
                    response=client.post(
                        "/api/reservations/create/",
                        json={"seat_id": seat.pk},
                        headers={"Authorization": f"Token {token}"},
                    )
                )
            )
            reserve.start()
            wait_until(waiting_for_a_lock, what="the reservation to wait for the lock")

            assert_database_unavailable(client.get("/api/performances/"))
        reserve.join(timeout=30)

        assert holder["response"].status_code == 201
        assert client.get("/api/performances/").status_code == 200


def test_an_unreachable_database_gets_503_on_the_api_and_readyz(
    subprocess_env: dict[str, str],
) -> None:
    nobody = "postgres://reservations:reservations@127.0.0.1:9/reservations"
    server = running_gunicorn(
        GUNICORN_WORKERS="1", DATABASE_URL=nobody, DATABASE_POOL_TIMEOUT="0.5"
    )
    with server as url, httpx.Client(base_url=url, timeout=30) as client:
        assert_database_unavailable(client.get("/api/performances/"))
        assert_database_unavailable(
            client.get("/api/reservations/", headers={"Authorization": "Token abc"})
        )
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["database"]
