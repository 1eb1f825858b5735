#!/usr/bin/env bash
# Start, stop or check a local Redis (Debian's redis-server), the Celery broker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_DIR=${REDIS_DIR:-$ROOT/.local/redis}

ping() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start() {
  mkdir -p "$REDIS_DIR"
  if ping; then
    echo "redis: already running on port $REDIS_PORT"
    return
  fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
    --save "" --appendonly no
  for _ in $(seq 1 20); do ping && break; sleep 0.5; done
  if ! ping; then
    echo "redis: not answering on 127.0.0.1:$REDIS_PORT; see $REDIS_DIR/redis.log" >&2
    exit 1
  fi
  echo "redis: ready on 127.0.0.1:$REDIS_PORT"
}

stop() {
  if ping; then redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
  echo "redis: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ping ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
