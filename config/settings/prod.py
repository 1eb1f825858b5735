"""Production: refuses a known or weak secret key; HTTPS only, unless told otherwise.

Every setting here is read from the environment with the safe value as its default,
so a deployment that forgets one gets the strict behaviour. docker-compose.yml, which
serves plain HTTP on localhost, turns the HTTPS ones off explicitly.
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import DEVELOPMENT_SECRET_KEY, SECRET_KEY, env


def secret_key_problem(key: str) -> str | None:
    """Say why `key` must not sign production sessions and tokens, or None if fine."""
    if key == DEVELOPMENT_SECRET_KEY:
        return "the development key is refused"
    if "change-me" in key.lower() or key.startswith("django-insecure-"):
        return "it is a placeholder (as in .env.example), not a random value"
    if len(key) < 32:
        return "it is too short"
    return None


if (problem := secret_key_problem(SECRET_KEY)) is not None:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 32 characters in "
        f"production: {problem}."
    )

# Cookies only over HTTPS. CSRF_COOKIE_HTTPONLY stays False: API clients with a
# session send the cookie's value back in X-CSRFToken.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Plain HTTP is redirected to HTTPS, except the probes' paths: health checks and
# Prometheus scrape the process directly, inside the network, over HTTP.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# HSTS (sent only on HTTPS responses): a year, subdomains included, preload-ready.
# Lower SECURE_HSTS_SECONDS while trying HTTPS out; browsers remember the value.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# Behind a proxy that terminates TLS: the header it sets to "https" (for example
# X-Forwarded-Proto), so Django knows the request was secure. Only set it if the proxy
# always sets or strips that header; otherwise a client could claim HTTPS. Empty: the
# connection itself decides (gunicorn already trusts X-Forwarded-Proto from 127.0.0.1).
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
    if _proxy_ssl_header
    else None
)

# SQL with its parameters (token keys, session keys) is logged at DEBUG by this
# logger; production never logs it, whatever LOG_LEVEL says.
LOGGING["loggers"]["django.db.backends"] = {"level": "INFO"}  # noqa: F405
