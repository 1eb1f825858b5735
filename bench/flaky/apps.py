from django.apps import AppConfig


class FlakyConfig(AppConfig):
    """Registers bench.flaky.handlers (events autodiscovers every app's handlers.py)."""

    name = "bench.flaky"
    label = "bench_flaky"
