from django.apps import AppConfig


class HttpApiConfig(AppConfig):
    """The kernel is an app only because it owns a model (IdempotencyRecord)."""

    name = "http_api"
    verbose_name = "HTTP API"
