"""infra/connect/connect.sh's `stop`, against a stand-in for the worker.

The stand-in is a real process whose command line names ConnectDistributed (what the
script checks before it signals a pid) and that ignores SIGTERM, as a worker stuck in
its shutdown would; no JVM is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONNECT_SH = ROOT / "infra/connect/connect.sh"
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def gone(pid: int) -> bool:
    """No such process, or a zombie (dead, not reaped by its parent, this test)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_stop_kills_a_worker_that_ignores_sigterm_and_returns_once_it_is_gone(
    tmp_path: Path,
) -> None:
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            STUBBORN,
            "org.apache.kafka.connect.cli.ConnectDistributed",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        (tmp_path / "connect.pid").write_text(str(worker.pid))
        began = time.monotonic()
        done = subprocess.run(
            ["bash", str(CONNECT_SH), "stop"],
            env={
                **os.environ,
                "CONNECT_HOME": str(tmp_path),
                "CONNECT_STOP_TIMEOUT": "1",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        # Checked before this test reaps it: the script must not have returned while
        # the process was still there (a start right after would race it).
        was_gone = gone(worker.pid)
        took = time.monotonic() - began
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sending SIGKILL" in done.stdout
    assert was_gone
    assert worker.returncode == -signal.SIGKILL
    assert not (tmp_path / "connect.pid").exists()
    assert took < 15  # the SIGTERM wait of CONNECT_STOP_TIMEOUT, not the default 30 s
