"""The Celery worker carries on after its broker (Redis) restarts: no human step.

A Redis server of the test's own, so restarting it disturbs nobody else.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.utils import timezone

from config.celery_app import app
from reservations.models import Reservation, ReservationStatus
from reservations.services import reservation_create
from reservations.tasks import expire_seat_holds
from tests.celery_worker import running_worker, worker_log
from tests.reservations.factories import make_performance, make_user
from tests.waiting import wait_until
from tests.web.server import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def redis_server(port: int, home: Path) -> Iterator[None]:
    """A Redis on `port` for the block (no persistence: it comes back empty)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server missing: run infra/bootstrap.sh"
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(home)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _pings(client), timeout=10, what="redis to answer")
        yield
    finally:
        server.kill()
        server.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def send(task: Any, *, queue: str, url: str) -> None:
    """Send over a connection of its own to `url`: the app's producer pool may still
    be connected to another test's broker."""
    with app.connection_for_write(url) as connection:
        task.apply_async(queue=queue, connection=connection, retry=True)


def due_reservation(seat_id: int) -> Reservation:
    reservation = reservation_create(user=make_user(), seat_id=seat_id)
    Reservation.objects.filter(pk=reservation.pk).update(
        hold_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return reservation


def expired(reservation: Reservation) -> bool:
    return (
        Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.EXPIRED
    )


def test_the_worker_goes_on_after_its_redis_restarts(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    seats = list(make_performance(seats=2).seats.order_by("number"))
    url = f"redis://127.0.0.1:{port}/0"
    first_redis = ExitStack()
    first_redis.enter_context(redis_server(port, tmp_path))
    try:
        with running_worker("--pool", "solo", broker_url=url) as queue:
            before = due_reservation(seats[0].pk)
            send(expire_seat_holds, queue=queue, url=url)
            wait_until(lambda: expired(before), timeout=60, what="a first expiry")

            first_redis.close()  # Redis is gone under the worker...
            wait_until(
                lambda: "Connection to broker lost" in worker_log(queue),
                timeout=60,
                what="the worker noticing",
            )
            with redis_server(port, tmp_path):  # ...and back, empty, on its port
                after = due_reservation(seats[1].pk)
                send(expire_seat_holds, queue=queue, url=url)
                wait_until(
                    lambda: expired(after), timeout=90, what="an expiry after it"
                )
    finally:
        first_redis.close()
