"""API clients that reserve, cancel, re-reserve and pay, through every fault.

Each intended operation carries an Idempotency-Key and is sent again, with the same
key, after a 503, a 5xx or a broken connection, until the API gives a definite answer:
so what the database holds at the end is exactly what clients were told happened, and
a request that committed before its connection broke is not done twice.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

# Flow shapes and their weights. "again" reserves the same seat a second time after
# cancelling it, so the seat's key carries several events whose order matters.
FLOWS = (("pay", 5), ("cancel", 2), ("cancel-again-pay", 3))


@dataclass
class DriverStats:
    flows: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    retried_503: int = 0
    retried_5xx: int = 0
    retried_connection: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, attribute: str) -> None:
        with self.lock:
            setattr(self, attribute, getattr(self, attribute) + 1)


class GaveUp(Exception):
    pass


class Client:
    """One user's session against the API."""

    def __init__(self, url: str, token: str, stats: DriverStats, rng: random.Random):
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Token {token}"}, timeout=30
        )
        self.stats = stats
        self.rng = rng

    def call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        key = uuid.uuid4().hex
        delay = 0.05
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                response = self.http.request(
                    method, path, json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                self.stats.count("retried_connection")
            else:
                with self.stats.lock:
                    self.stats.statuses[response.status_code] += 1
                if response.status_code == 503:
                    self.stats.count("retried_503")
                elif response.status_code >= 500:
                    self.stats.count("retried_5xx")
                else:
                    return response
            time.sleep(delay * self.rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)
        raise GaveUp(f"{method} {path}: no answer in 300 s")

    def reserve(self, seat_id: int) -> int | None:
        response = self.call("POST", "/api/reservations/create/", {"seat_id": seat_id})
        if response.status_code == 201:
            return response.json()["id"]
        self._unexpected(response, "reserve")
        return None

    def cancel(self, reservation_id: int) -> None:
        response = self.call("POST", f"/api/reservations/{reservation_id}/cancel/")
        if response.status_code != 200:
            self._unexpected(response, "cancel")

    def pay(self, reservation_id: int) -> None:
        response = self.call("POST", f"/api/reservations/{reservation_id}/pay/")
        if response.status_code != 201:
            self._unexpected(response, "pay")

    def run_flow(self, shape: str, seat_id: int) -> None:
        reservation = self.reserve(seat_id)
        if reservation is None:
            return
        if shape == "pay":
            self.pay(reservation)
        else:
            self.cancel(reservation)
            if shape == "cancel-again-pay":
                again = self.reserve(seat_id)
                if again is not None:
                    self.pay(again)
        with self.stats.lock:
            self.stats.flows[shape] += 1

    def _unexpected(self, response: httpx.Response, what: str) -> None:
        with self.stats.lock:
            self.stats.unexpected.append(
                f"{what}: {response.status_code} {response.text[:200]}"
            )


class Driver:
    """`clients` threads taking seats from one queue until told to stop."""

    def __init__(
        self, url: str, tokens: list[str], seats: list[int], *, seed: int
    ) -> None:
        self.url = url
        self.tokens = tokens
        self.seats = list(seats)
        self.seed = seed
        self.stats = DriverStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.min_flows = 0

    def start(self, *, min_flows: int) -> None:
        self.min_flows = min_flows
        for n, token in enumerate(self.tokens):
            rng = random.Random(f"{self.seed}-client-{n}")
            thread = threading.Thread(
                target=self._work, args=(token, rng), name=f"client-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def flows_done(self) -> int:
        return sum(self.stats.flows.values())

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _next_seat(self) -> int | None:
        with self._lock:
            return self.seats.pop() if self.seats else None

    def _work(self, token: str, rng: random.Random) -> None:
        client = Client(self.url, token, self.stats, rng)
        shapes, weights = zip(*FLOWS, strict=True)
        while not self._stop.is_set():
            seat = self._next_seat()
            if seat is None:
                return
            try:
                client.run_flow(rng.choices(shapes, weights)[0], seat)
            except GaveUp as exc:
                with self.stats.lock:
                    self.stats.unexpected.append(str(exc))
