from django.apps import AppConfig


class EffectsConfig(AppConfig):
    """A test-only app: handlers with controllable failures and a table of their effects."""

    name = "tests.effects"
    label = "test_effects"
