"""A small client of Kafka Connect's REST API (the calls `cdc_connector` needs).

Standard library only: the API is a few JSON calls. Every failure becomes a
`ConnectError` whose message says what to do (start Connect, fix the config).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


class ConnectError(RuntimeError):
    """Kafka Connect is unreachable or refused a call."""


class ConnectClient:
    """Calls against one Connect worker (any worker of the group will do)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def version(self) -> str:
        """Return the worker's Kafka version: a cheap check that Connect answers."""
        result = self._call("GET", "/")
        return str(result.get("version", "?")) if isinstance(result, dict) else "?"

    def put_config(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        """Create or update connector `name` (idempotent: PUT /connectors/NAME/config)."""
        result = self._call("PUT", f"/connectors/{name}/config", config)
        assert isinstance(result, dict)
        return result

    def status(self, name: str) -> dict[str, Any] | None:
        """Return the connector's and its tasks' states, or None if it does not exist."""
        result = self._call("GET", f"/connectors/{name}/status", missing_ok=True)
        assert result is None or isinstance(result, dict)
        return result

    def delete(self, name: str) -> bool:
        """Delete the connector (its offsets stay in Connect's topic); False if absent."""
        return self._call("DELETE", f"/connectors/{name}", missing_ok=True) is not None

    def create_stopped(self, name: str, config: dict[str, str]) -> None:
        """Create connector `name` in the STOPPED state (KIP-980): no task runs yet."""
        body = {"name": name, "config": config, "initial_state": "STOPPED"}
        self._call("POST", "/connectors", body)

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks, keeping its config (KIP-875)."""
        self._call("PUT", f"/connectors/{name}/stop")

    def pause(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/resume")

    def offsets(self, name: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Return the connector's stored source offsets (KIP-875).

        A connector created a moment ago may not be known to every part of the
        worker yet (refused meanwhile): retried.
        """
        result = self._retrying("GET", f"/connectors/{name}/offsets", timeout)
        assert isinstance(result, dict)
        return result

    def reset_offsets(self, name: str, *, timeout: float = 30.0) -> None:
        """Forget the stopped connector's source offsets (KIP-875).

        Refused (400/409) until the stop has reached every task: retried meanwhile.
        """
        self._retrying("DELETE", f"/connectors/{name}/offsets", timeout)

    def wait_stopped(self, name: str, *, timeout: float = 30.0) -> None:
        """Wait until a stop has reached the connector and its tasks are gone."""
        self._wait(
            name,
            lambda s: (
                s is not None
                and s["connector"]["state"] == "STOPPED"
                and not s.get("tasks")
            ),
            timeout,
            "STOPPED, without tasks",
        )

    def wait_deleted(self, name: str, *, timeout: float = 30.0) -> None:
        """Wait until the worker no longer knows the connector (DELETE is async)."""
        self._wait(name, lambda s: s is None, timeout, "deleted")

    def _wait(
        self,
        name: str,
        done: Callable[[dict[str, Any] | None], bool],
        timeout: float,
        what: str,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done(status := self.status(name)):
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"connector {name} not {what} after {timeout:.0f} s: "
                    f"{json.dumps(status)}"
                )
            time.sleep(0.05)

    def _retrying(self, method: str, path: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call(method, path)
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def restart(self, name: str) -> None:
        """Restart the connector and its failed tasks (after fixing what failed them)."""
        self._call(
            "POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true"
        )

    def _call(
        self, method: str, path: str, body: Any = None, *, missing_ok: bool = False
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 404 and missing_ok:
                return None
            detail = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise ConnectError(
                f"Kafka Connect at {self.url} refused {method} {path}: "
                f"{error.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectError(
                f"Kafka Connect is not reachable at {self.url} ({reason}); start it "
                "with `infra/connect/connect.sh start` (or set CDC_CONNECT_URL)"
            ) from None
        return json.loads(text) if text.strip() else {}
