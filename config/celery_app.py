"""The Celery application: broker and beat schedule come from Django settings (CELERY_*)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_ready.connect
def _serve_metrics(**_: object) -> None:
    """Serve the worker's metrics on CELERY_METRICS_PORT (every pool process's, when
    PROMETHEUS_MULTIPROC_DIR is set)."""
    from django.conf import settings

    port = getattr(settings, "CELERY_METRICS_PORT", 0)
    if port:
        from prometheus_client import start_http_server

        from events.observability.metrics import registry

        start_http_server(port, registry=registry())


@signals.worker_process_shutdown.connect
def _forget_pool_process(pid: int | None = None, **_: object) -> None:
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
