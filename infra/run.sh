#!/usr/bin/env bash
# `make run`'s last step: every process under honcho; Ctrl-C stops them all, then the
# backing services (PostgreSQL, Redis, Kafka) that `make run` started.
#
# RELAY=polling (default): the Procfile as it is (relay_outbox sends the outbox).
# RELAY=cdc: OUTBOX_RELAY=cdc for every process, and instead of relay_outbox a Kafka
# Connect worker with Debezium (infra/connect/connect.sh run) plus
# `manage.py cdc_connector watch`, which registers the connector once Connect answers
# and logs its state changes. On exit it says that the replication slot stays, and how
# to drop it (relay_outbox warns of it too).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RELAY=${RELAY:-polling}
on_exit() {
  echo
  if [[ $RELAY == cdc ]]; then
    echo "cdc: the database's replication slot stays (RELAY=cdc resumes from it); it keeps"
    echo "  the WAL until dropped: make services; bash infra/connect/connect.sh start;"
    echo "  .venv/bin/python manage.py cdc_connector delete --drop-slot; bash infra/connect/connect.sh stop"
  fi
  echo "stopping PostgreSQL, Redis and Kafka"
  bash infra/services.sh stop
}
trap on_exit EXIT
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
