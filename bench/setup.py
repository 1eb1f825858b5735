"""Shared set-up: Django on the step's database, topics of the bench's own."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import uuid

import django


def setup() -> str:
    """Configure Django for a bench run; return the run's topic prefix."""
    prefix = os.environ.get("BENCH_TOPIC_PREFIX") or f"bench-{uuid.uuid4().hex[:6]}-"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ["KAFKA_TOPIC_PREFIX"] = prefix
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # The audit log (a JSON line per event) is measured on its own: set
    # EVENTS_AUDIT_LOG_LEVEL=INFO to include it.
    os.environ.setdefault("EVENTS_AUDIT_LOG_LEVEL", "WARNING")
    django.setup()
    return prefix


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _postgres_version() -> str:
    done = subprocess.run(
        ["psql", "--version"], capture_output=True, text=True, check=False
    )
    found = re.search(r"\) (\d+\.\d+)", done.stdout)
    return found.group(1) if found else "?"


def machine() -> str:
    """One line a reader can compare machines by: CPU, cores, memory, versions."""
    from bench.anchors import KAFKA_HOME

    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    kafka = sorted(p.name for p in (KAFKA_HOME / "lib").glob("kafka-clients-*.jar"))
    kafka_version = (
        kafka[0].removeprefix("kafka-clients-").removesuffix(".jar") if kafka else "?"
    )
    return (
        f"{_cpu_model()}, {cpus} cores, {mem_kb / 1024 / 1024:.0f} GiB, "
        f"Python {platform.python_version()}, PostgreSQL {_postgres_version()}, "
        f"Kafka {kafka_version} (single node, KRaft); the broker, PostgreSQL, the "
        "load generators and the processes under test share the cores"
    )


def delete_topics(prefix: str) -> None:
    from events.core.topics import delete_topics_with_prefix

    delete_topics_with_prefix(prefix)
