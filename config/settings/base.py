"""Settings shared by every environment, all read through django-environ.

A `.env` file at the repository root is read when present; real environment variables win.
`.env.example` documents every variable read here.
"""

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# The key used by dev and test; prod refuses to start with it.
DEVELOPMENT_SECRET_KEY = "dev-insecure-0f1c2e9b7a-not-for-production"

SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "events",
    "http_api",
    "reservations",
    "payments",
]

MIDDLEWARE = [
    "config.middleware.TraceparentMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.ApiRequestSizeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# Under /api/ a CSRF failure answers in the API's JSON error shape.
CSRF_FAILURE_VIEW = "config.error_views.csrf_failure"
# Where the browsable API's login sends a user, and logout too.
LOGIN_REDIRECT_URL = "/api/"
LOGOUT_REDIRECT_URL = "/api/"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.pipeline_glance",
            ],
        },
    },
]

DATABASES = {
    "default": env.db(
        "DATABASE_URL",
        default="postgres://reservations:reservations@127.0.0.1:5432/reservations",
    )
}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Every process holds at most DATABASE_POOL_MAX_SIZE connections (psycopg's pool), so
# web workers, relay, consumers and Celery together stay under max_connections (the
# budget is in the README). A request that finds the pool empty waits
# DATABASE_POOL_TIMEOUT seconds, then gets a 503 with Retry-After (config.error_views).
# 0 turns the pool off: one connection per thread, kept for CONN_MAX_AGE seconds.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=4)
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=2.0)


def configure_database_pool(database: dict, *, max_size: int, timeout: float) -> None:
    """Give `database` a bounded psycopg pool, or none (and persistent connections)."""
    options = database.setdefault("OPTIONS", {})
    if max_size > 0:
        database["CONN_MAX_AGE"] = 0  # the pool keeps the connections instead
        options["pool"] = {"min_size": 1, "max_size": max_size, "timeout": timeout}
    else:
        options.pop("pool", None)
        database["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)


configure_database_pool(
    DATABASES["default"],
    max_size=DATABASE_POOL_MAX_SIZE,
    timeout=DATABASE_POOL_TIMEOUT,
)
# Shared by every process, so a throttle's budget is one per client, not one per
# gunicorn worker (each worker had a memory cache of its own). Redis already runs for
# Celery; another database number keeps the two apart.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default="redis://127.0.0.1:6379/1"),
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="reservations"),
    }
}

# Seconds a client is told to wait (Retry-After) when the database is unreachable or
# the pool is exhausted.
DATABASE_UNAVAILABLE_RETRY_AFTER = env.int(
    "DATABASE_UNAVAILABLE_RETRY_AFTER", default=1
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".local" / "static"
# WhiteNoise serves the admin's and the API docs' files from the process itself. With
# finders it needs no collectstatic (make run, tests); the image collects them and
# turns this off.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

REST_FRAMEWORK = {
    # Token first, so an anonymous API call gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.TokenOrBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "http_api.api_errors.api_exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "writes": env.str("API_WRITE_THROTTLE_RATE", default="120/min"),
        # POST /api/auth/token/, per client address: slows down password guessing.
        "auth": env.str("API_AUTH_THROTTLE_RATE", default="20/min"),
    },
    # How many proxies in front of the web append to X-Forwarded-For. The "auth"
    # throttle counts per client address: with 0 that is REMOTE_ADDR and the header is
    # ignored; left unset, DRF would take the whole header, which any client can vary
    # to renew its budget of password guesses.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Concert seat reservations",
    "DESCRIPTION": "Reserve seats and pay for them; every change is announced on Kafka "
    "through a transactional outbox.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api_docs.document_front_door_errors",
    ],
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "tokenAuth": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Send 'Authorization: Token <key>' (or 'Bearer "
                "<key>'). Get the key from POST /api/auth/token/ with a username "
                "and password.",
            },
            "cookieAuth": {
                "type": "apiKey",
                "in": "cookie",
                "name": "sessionid",
                "description": "A session from logging in at /api/auth/login/ (the "
                "browsable API); writes need the csrftoken cookie's value in an "
                "X-CSRFToken header.",
            },
        }
    },
}

# How long a reserved seat stays HELD before the hold expires and frees it.
RESERVATION_HOLD_SECONDS = env.int("RESERVATION_HOLD_SECONDS", default=300)
SEAT_HOLD_SWEEP_SECONDS = env.float("SEAT_HOLD_SWEEP_SECONDS", default=30.0)

# --- Celery (periodic housekeeping) ---------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The worker serves its metrics here (0: not at all); see events.observability.metrics.
CELERY_METRICS_PORT = env.int("CELERY_METRICS_PORT", default=0)
# Retention of the delivery log (PublishedEvent) and of the inbox (InboxEntry). The
# inbox must outlive any redelivery: keep it longer than the topics' retention.
EVENTS_PUBLISHED_RETENTION_DAYS = env.float(
    "EVENTS_PUBLISHED_RETENTION_DAYS", default=7.0
)
EVENTS_INBOX_RETENTION_DAYS = env.float("EVENTS_INBOX_RETENTION_DAYS", default=8.0)
EVENTS_PRUNE_INTERVAL_SECONDS = env.float(
    "EVENTS_PRUNE_INTERVAL_SECONDS", default=3600.0
)
EVENTS_GAUGES_INTERVAL_SECONDS = env.float(
    "EVENTS_GAUGES_INTERVAL_SECONDS", default=15.0
)
CELERY_BEAT_SCHEDULE = {
    "expire-seat-holds": {
        "task": "reservations.tasks.expire_seat_holds",
        "schedule": SEAT_HOLD_SWEEP_SECONDS,
    },
    "prune-published-events": {
        "task": "events.tasks.prune_published_events",
        "schedule": EVENTS_PRUNE_INTERVAL_SECONDS,
    },
    "prune-inbox-entries": {
        "task": "events.tasks.prune_inbox_entries",
        "schedule": EVENTS_PRUNE_INTERVAL_SECONDS,
    },
    "refresh-pipeline-gauges": {
        "task": "events.tasks.refresh_pipeline_gauges",
        "schedule": EVENTS_GAUGES_INTERVAL_SECONDS,
    },
}

# --- Kafka and the event pipeline -----------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092")
# Prepended to every topic name; the test suite sets a unique one per run.
KAFKA_TOPIC_PREFIX = env.str("KAFKA_TOPIC_PREFIX", default="")
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=3)
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=1)
# The report keeps events for 7 days.
KAFKA_TOPIC_RETENTION_MS = env.int(
    "KAFKA_TOPIC_RETENTION_MS", default=7 * 24 * 3600 * 1000
)
KAFKA_CONSUMER_GROUP = env.str("KAFKA_CONSUMER_GROUP", default="reservation-service")
# "consumer" is KIP-848's broker-driven protocol; "classic" uses cooperative-sticky.
KAFKA_GROUP_PROTOCOL = env.str("KAFKA_GROUP_PROTOCOL", default="consumer")

# Logical event streams -> topic names (the report's names are the defaults).
EVENT_TOPICS = {
    "seat-reserved": env.str("TOPIC_SEAT_RESERVED", default="seat-reserved-topic"),
    "reservation": env.str("TOPIC_RESERVATION", default="reservation-topic"),
    "payment-complete": env.str(
        "TOPIC_PAYMENT_COMPLETE", default="payment-complete-topic"
    ),
    "seat-hold-expired": env.str(
        "TOPIC_SEAT_HOLD_EXPIRED", default="seat-hold-expired-topic"
    ),
}
EVENT_DLQ_TOPICS = {
    "seat-reserved": env.str("TOPIC_SEAT_RESERVED_DLQ", default="seat-reserved-dlq"),
    "reservation": env.str("TOPIC_RESERVATION_DLQ", default="reservation-dlq"),
    "payment-complete": env.str(
        "TOPIC_PAYMENT_COMPLETE_DLQ", default="payment-complete-dlq"
    ),
    "seat-hold-expired": env.str(
        "TOPIC_SEAT_HOLD_EXPIRED_DLQ", default="seat-hold-expired-dlq"
    ),
}

# Retries: the report's @RetryableTopic(attempts = "3", backoff = @Backoff(delay = 1000)),
# doubling each time.
EVENTS_RETRY_ATTEMPTS = env.int("EVENTS_RETRY_ATTEMPTS", default=3)
EVENTS_RETRY_BACKOFF_MS = env.int("EVENTS_RETRY_BACKOFF_MS", default=1000)
EVENTS_RETRY_BACKOFF_MULTIPLIER = env.float(
    "EVENTS_RETRY_BACKOFF_MULTIPLIER", default=2.0
)
EVENTS_RETRY_BACKOFF_MAX_MS = env.int("EVENTS_RETRY_BACKOFF_MAX_MS", default=30_000)

# Dead-letter storm guard: at most this many dead letters per window, then pause.
EVENTS_DLQ_MAX_PER_WINDOW = env.int("EVENTS_DLQ_MAX_PER_WINDOW", default=100)
EVENTS_DLQ_WINDOW_SECONDS = env.float("EVENTS_DLQ_WINDOW_SECONDS", default=60.0)
EVENTS_DLQ_STORM_PAUSE_SECONDS = env.float(
    "EVENTS_DLQ_STORM_PAUSE_SECONDS", default=30.0
)
CONSUMER_BATCH_SIZE = env.int("CONSUMER_BATCH_SIZE", default=500)
# Consumers per run_consumers process (threads): one decodes while another waits for
# PostgreSQL. --concurrency multiplies processes; this, consumers within each.
CONSUMER_THREADS = env.int("CONSUMER_THREADS", default=1)

OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=2000)
OUTBOX_RELAY_POLL_INTERVAL = env.float("OUTBOX_RELAY_POLL_INTERVAL", default=1.0)
# Shards of the outbox (by a hash of the event key): each relay process leads a fair
# share and stands by for the rest, so N relays on N machines share the sending. 1: one
# leader for everything. Every relay must have the same value (events.relay.shards).
OUTBOX_RELAY_SHARDS = env.int("OUTBOX_RELAY_SHARDS", default=1)
# Keep a PublishedEvent row (topic, partition, offset, time) per acknowledged event, for
# the dead-letter timeline. Off by default: it doubles the database's work per event
# (bench/REPORT.md), and the audit log line per published event says the same.
OUTBOX_DELIVERY_LOG = env.bool("OUTBOX_DELIVERY_LOG", default=False)

# Which relay moves the outbox to Kafka: "polling" (manage.py relay_outbox) or "cdc"
# (Debezium in Kafka Connect reads the outbox inserts from the WAL; `publish` then
# deletes its row in the same transaction). Never both: relay_outbox refuses in cdc mode.
OUTBOX_RELAY = env.str("OUTBOX_RELAY", default="polling")
# cdc mode: an event whose record (key + payload + headers + Kafka's record overhead)
# exceeds this is kept in the outbox as parked instead of being captured; the Connect
# producer's max.request.size is set to it. Kafka's default message.max.bytes is 1 MiB.
OUTBOX_MAX_MESSAGE_BYTES = env.int("OUTBOX_MAX_MESSAGE_BYTES", default=1_048_576)
# cdc mode: the Kafka Connect REST API, and the PostgreSQL host as Connect sees it
# (empty: DATABASE_URL's host).
CDC_CONNECT_URL = env.str("CDC_CONNECT_URL", default="http://127.0.0.1:8083")
CDC_DATABASE_HOST = env.str("CDC_DATABASE_HOST", default="")

# /readyz gives Kafka this long to answer before it reports the broker unreachable.
HEALTH_KAFKA_TIMEOUT_SECONDS = env.float("HEALTH_KAFKA_TIMEOUT_SECONDS", default=2.0)

# "json": every log line is a JSON object (config.logging.JsonFormatter); "plain" for
# people reading a terminal. The events.audit logger (one line per event published,
# processed, retried or dead-lettered) is JSON either way.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# Typed loosely: the environments' settings change nested entries.
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace_id": {"()": "config.logging.TraceIdFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s"
        },
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["trace_id"],
        },
        "audit": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["trace_id"],
        },
    },
    "loggers": {
        "events.audit": {
            "handlers": ["audit"],
            "level": env.str("EVENTS_AUDIT_LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
