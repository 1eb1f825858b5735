#!/usr/bin/env bash
# Start or stop every backing service: PostgreSQL, Redis, Kafka.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  start)
    bash "$ROOT/infra/postgres.sh" start
    bash "$ROOT/infra/redis.sh" start
    bash "$ROOT/infra/kafka/kafka.sh" start
    ;;
  stop)
    bash "$ROOT/infra/kafka/kafka.sh" stop || true
    bash "$ROOT/infra/redis.sh" stop || true
    bash "$ROOT/infra/postgres.sh" stop || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
