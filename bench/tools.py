"""External tools the benchmarks drive, installed on first use into .local/bin.

The load generator is vegeta (Go): a constant-rate, open-loop HTTP attacker whose
timing does not depend on the server's answers, and which runs outside this
interpreter, so its own work never competes with the step for the GIL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.harness import ROOT

BIN = ROOT / ".local" / "bin"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"


def _go() -> str:
    """The Go toolchain: on PATH, or where this machine's image puts it."""
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(found).exists():
        raise RuntimeError("vegeta is missing and there is no Go toolchain to build it")
    return found


def vegeta() -> Path:
    """Path of the pinned vegeta binary; `go install` it into .local/bin if absent.

    Idempotent: an existing binary is used as is. The version is pinned so every run
    measures with the same load generator.
    """
    binary = BIN / "vegeta"
    if binary.exists():
        return binary
    BIN.mkdir(parents=True, exist_ok=True)
    # Built into a directory of its own and moved into place in one rename, so a
    # second run installing at the same time (the suite beside `make bench`) never
    # starts a half-written binary.
    with tempfile.TemporaryDirectory(dir=BIN) as build:
        subprocess.run(
            [_go(), "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
            cwd=ROOT,
            env={**os.environ, "GOBIN": build},
            check=True,
        )
        os.replace(Path(build) / "vegeta", binary)
    return binary
