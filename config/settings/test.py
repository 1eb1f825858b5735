"""Test settings: a topic prefix unique to this run, so tests never share topics."""

import uuid

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, configure_database_pool, env

KAFKA_TOPIC_PREFIX = env.str(
    "KAFKA_TOPIC_PREFIX", default=f"test-{uuid.uuid4().hex[:8]}-"
)
KAFKA_CONSUMER_GROUP = env.str(
    "KAFKA_CONSUMER_GROUP", default=f"{KAFKA_TOPIC_PREFIX}group"
)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = False

# Test-only handlers and the table of their effects.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.effects"]  # noqa: F405

# One audit line per event would fill the stderr pipe of the child processes that
# tests start and never read; tests that check audit lines raise the level themselves.
LOGGING["loggers"]["events.audit"]["level"] = env.str(  # noqa: F405
    "EVENTS_AUDIT_LOG_LEVEL", default="WARNING"
)

# In-process tests run many threads against one database (concurrency tests, the live
# server); the pool's bound would make them wait. Servers that tests start set it.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
configure_database_pool(
    DATABASES["default"],
    max_size=DATABASE_POOL_MAX_SIZE,
    timeout=env.float("DATABASE_POOL_TIMEOUT", default=2.0),
)

# In-process tests count throttled requests in this process's memory, so test runs and
# `make run` never share budgets; servers that tests start use Redis, as in production.
if not env.str("CACHE_URL", default=""):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
