#!/usr/bin/env bash
# `make run`'s last step: every process under honcho; Ctrl-C stops them all, then the
# backing services (PostgreSQL, Redis, Kafka) that `make run` started.
#
# RELAY=polling (default): the Procfile as it is (relay_outbox sends the outbox).
# RELAY=cdc: OUTBOX_RELAY=cdc for every process, and instead of relay_outbox a Kafka
# Connect worker with Debezium (infra/connect/connect.sh run) plus
# `manage.py cdc_connector watch`, which registers the connector once Connect answers
# and logs its state changes.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RELAY=${RELAY:-polling}
trap 'echo; echo "stopping PostgreSQL, Redis and Kafka"; bash infra/services.sh stop' EXIT
case "$RELAY" in
  polling)
    .venv/bin/honcho start -f Procfile
    ;;
  cdc)
    export OUTBOX_RELAY=cdc
    # The first install (Maven, the transformation's build and tests) can outlast
    # `watch --wait`: done before anything starts.
    bash infra/connect/connect.sh install
    mkdir -p .local
    {
      grep -v '^relay:' Procfile
      echo 'connect: bash infra/connect/connect.sh run'
      echo 'cdc: .venv/bin/python manage.py cdc_connector watch --wait 180'
    } >.local/Procfile.cdc
    .venv/bin/honcho start -f .local/Procfile.cdc -d "$ROOT"
    ;;
  *)
    echo "run: RELAY=$RELAY: use polling or cdc" >&2
    exit 2
    ;;
esac
