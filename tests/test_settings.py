"""Settings: safe defaults, and production refuses the development secret key."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_settings(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    clean.update(DJANGO_SETTINGS_MODULE=module, **env)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
    )


def test_debug_is_off_unless_asked_for() -> None:
    assert load_settings("config.settings.dev").stdout.strip() == "False"
    assert load_settings("config.settings.dev", DEBUG="true").stdout.strip() == "True"


def test_production_refuses_the_development_secret_key() -> None:
    result = load_settings("config.settings.prod")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_starts_with_a_real_secret_key() -> None:
    result = load_settings("config.settings.prod", SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
