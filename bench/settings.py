"""Settings for bench processes that need bench-only handlers (bench.flaky).

The development settings plus the bench's app; used through DJANGO_SETTINGS_MODULE
by the `run_consumers` that `retry:run` starts.
"""

from config.settings.dev import *  # noqa: F403
from config.settings.dev import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.flaky"]
