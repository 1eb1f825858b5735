"""Creating the pipeline's topics: main, retry and dead-letter topics of every stream."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from events.core.conf import pipeline_settings
from events.core.kafka import AdminClient, KafkaError, NewTopic, build_admin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool


def topic_config(replication_factor: int, retention_ms: int) -> dict[str, str]:
    """Return the per-topic configs that `create_topics` sets.

    With three or more replicas a write (acks=all) is acknowledged once two replicas
    have it: one broker may fail without losing an acknowledged write or stopping
    producers. Fewer replicas keep the broker's setting (1 on the single node): with
    two, min.insync.replicas=2 would stop every write while one broker is down.
    """
    config = {"retention.ms": str(retention_ms)}
    if replication_factor >= 3:
        config["min.insync.replicas"] = "2"
    return config


def create_topics(
    names: list[str] | None = None, *, timeout: float = 30.0
) -> list[TopicResult]:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Running it twice changes nothing: a topic that exists is reported as not created.
    """
    conf = pipeline_settings()
    names = names if names is not None else conf.all_topics()
    admin = build_admin()
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=conf.partitions,
            replication_factor=conf.replication_factor,
            config=topic_config(conf.replication_factor, conf.retention_ms),
        )
        for name in names
        if name not in existing
    ]
    created: set[str] = set()
    if wanted:
        futures = admin.create_topics(wanted, operation_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                created.add(name)
                logger.info("created topic %s", name)
            except Exception as exc:
                error = exc.args[0] if exc.args else None
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    continue
                raise
    _wait_until_visible(admin, names, timeout)
    return [TopicResult(name=name, created=name in created) for name in names]


def _wait_until_visible(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until the broker's metadata lists every topic.

    The controller acknowledges a creation before every broker's metadata has it; a
    relay started right after `create_topics` must not find its topics missing.
    """
    deadline = time.monotonic() + timeout
    while True:
        missing = set(names) - set(admin.list_topics(timeout=timeout).topics)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"topics still not visible after {timeout:.0f} s: {sorted(missing)}"
            )
        time.sleep(0.1)


def delete_topics_with_prefix(prefix: str, *, timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with `prefix` (test and bench cleanup)."""
    if not prefix:
        raise ValueError("refusing to delete every topic: give a prefix")
    admin = build_admin()
    ours = [
        t for t in admin.list_topics(timeout=timeout).topics if t.startswith(prefix)
    ]
    if ours:
        for future in admin.delete_topics(ours, operation_timeout=timeout).values():
            # Best effort: a topic already gone is fine.
            with contextlib.suppress(Exception):
                future.result(timeout=timeout)
    return ours
