#!/usr/bin/env bash
# The web process of `make run` (gunicorn, as in production) or `make dev` (Django's
# development server with autoreload): WEB_SERVER=gunicorn|dev.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${WEB_SERVER:-gunicorn}" in
  gunicorn)
    # Multiprocess metrics: the workers share a directory, emptied at every start.
    export PROMETHEUS_MULTIPROC_DIR=$ROOT/.local/prometheus-web
    rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    exec .venv/bin/gunicorn -c config/gunicorn.py config.wsgi:application
    ;;
  dev)
    exec .venv/bin/python manage.py runserver --insecure 127.0.0.1:8000
    ;;
  *) echo "WEB_SERVER must be gunicorn or dev, not ${WEB_SERVER}" >&2; exit 2 ;;
esac
