"""Running the relay: in a thread for most tests, as a real process for crash tests."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from events.relay.outbox_relay import OutboxRelay

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_relay(
    relay: OutboxRelay | None = None, **options: Any
) -> Iterator[OutboxRelay]:
    """Run `relay` (or a new one built with `options`) in a thread for the block."""
    relay = relay or OutboxRelay(**options)
    thread = threading.Thread(target=relay.run, name="relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "relay did not stop"


def start_relay_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    from tests.events.pipeline import start_manage_process

    return start_manage_process(env, "relay_outbox", *args)
