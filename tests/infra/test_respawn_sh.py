"""infra/respawn.sh, which keeps `make run`'s relay and consumers running under honcho."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.waiting import wait_until

RESPAWN = Path(__file__).resolve().parents[2] / "infra" / "respawn.sh"


def children(pid: int) -> list[int]:
    """The wrapper's `sleep 60` children (not the `sleep 1` of its restart pause)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in found if _cmdline(c) == ["sleep", "60"]]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def test_a_killed_command_is_started_again_and_a_sigterm_ends_both() -> None:
    wrapper = subprocess.Popen(["bash", str(RESPAWN), "sleep", "60"])
    try:
        first = wait_until(lambda: children(wrapper.pid), timeout=10)[0]
        os.kill(first, signal.SIGKILL)
        again = wait_until(
            lambda: [c for c in children(wrapper.pid) if c != first], timeout=10
        )
        assert again and wrapper.poll() is None

        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=10) != 0
        assert not Path(f"/proc/{again[0]}").exists()  # the command ended with it
    finally:
        wrapper.kill()


def test_a_command_that_keeps_failing_is_given_up_with_its_status() -> None:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(RESPAWN), "bash", "-c", "exit 3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "died 5 times within 30 s" in done.stderr
    assert done.stderr.count("starting it again") == 4
    assert time.monotonic() - started < 30


def test_a_clean_exit_ends_it() -> None:
    done = subprocess.run(["bash", str(RESPAWN), "true"], timeout=10)
    assert done.returncode == 0


def test_a_sigterm_during_the_restart_pause_ends_it() -> None:
    wrapper = subprocess.Popen(["bash", str(RESPAWN), "sleep", "60"])
    try:
        first = wait_until(lambda: children(wrapper.pid), timeout=10)[0]
        os.kill(first, signal.SIGKILL)
        time.sleep(0.3)  # in the 1 s pause
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=10) == 143
        assert children(wrapper.pid) == []
    finally:
        wrapper.kill()
