"""Gunicorn settings (`gunicorn -c config/gunicorn.py config.wsgi:application`).

Sized for the machine: 2 workers per core (at most 8), each with GUNICORN_THREADS
threads (gthread, so a worker keeps many client connections open and a slow client
holds no worker), and a listen backlog that takes a burst of connections instead of
resetting them.
Each worker's database pool gets one connection per thread unless
DATABASE_POOL_MAX_SIZE says otherwise, so the web's share of PostgreSQL is
workers x threads (the README's connection budget).

Binds to 127.0.0.1 unless GUNICORN_BIND says otherwise: the container sets 0.0.0.0.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics there and /metrics
aggregates them; a worker that exits is marked dead so its live gauges disappear.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# At most 8 by default: os.cpu_count() is the host's in a container, and each worker
# holds up to `threads` database connections (the README's budget).
workers = int(
    os.environ.get("GUNICORN_WORKERS", str(min(8, 2 * (os.cpu_count() or 1))))
)
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
# Idle keep-alive connections are closed after this long. Longer than any client's or
# proxy's own idle timeout (httpx and requests 5 s, most load balancers 60 s), so
# the client always closes first: a server closing an idle connection races a
# request sent on it, and the client sees a reset.
keepalive = 75
# The longest request line gunicorn takes short of no limit; longer URLs get a 414
# (config.api_docs documents it in the schema).
limit_request_line = 8190
timeout = 30
graceful_timeout = 20
# Access log off by default (the audit log records what matters); "-" for stderr.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None

# Read by config.settings in each worker: a connection per thread, no more.
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", str(threads))


def child_exit(_server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
