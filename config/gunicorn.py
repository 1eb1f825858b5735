"""Gunicorn settings (`gunicorn -c config/gunicorn.py config.wsgi:application`).

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics there and /metrics
aggregates them; a worker that exits is marked dead so its live gauges disappear.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))


def child_exit(_server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
