"""Shared set-up: Django on the development database, topics of the bench's own."""

from __future__ import annotations

import os
import platform
import uuid

import django


def setup() -> str:
    """Configure Django for a bench run; return the run's topic prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ["KAFKA_TOPIC_PREFIX"] = prefix
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # The audit log (a JSON line per event) is measured on its own: set
    # EVENTS_AUDIT_LOG_LEVEL=INFO to include it.
    os.environ.setdefault("EVENTS_AUDIT_LOG_LEVEL", "WARNING")
    django.setup()
    return prefix


def machine() -> str:
    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return (
        f"{platform.processor() or platform.machine()}, {cpus} cores, "
        f"{mem_kb / 1024 / 1024:.0f} GiB, Python {platform.python_version()}, "
        "PostgreSQL and Kafka on the same machine"
    )


def delete_topics(prefix: str) -> None:
    from events.topics import delete_topics_with_prefix

    delete_topics_with_prefix(prefix)
