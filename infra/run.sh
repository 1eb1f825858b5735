#!/usr/bin/env bash
# `make run`'s last step: every process under honcho; Ctrl-C stops them all, then the
# backing services (PostgreSQL, Redis, Kafka) that `make run` started.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
trap 'echo; echo "stopping PostgreSQL, Redis and Kafka"; bash infra/services.sh stop' EXIT
.venv/bin/honcho start -f Procfile
