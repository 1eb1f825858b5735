"""Production settings pass `check --deploy`; secrets come only from the environment.

The settings are loaded in child processes, as a deployment would load them, with
the variables a developer's shell might export for local HTTP taken out.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management.utils import get_random_secret_key

ROOT = Path(__file__).resolve().parents[2]
# Read by config.settings.prod; the tests want its defaults unless they say otherwise.
PROD_VARIABLES = {
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
}


def random_secret_key() -> str:
    """50 random characters, as Django's own generator makes them.

    Not starting with "$": django-environ reads such a value as the name of another
    variable to take the value from.
    """
    while (key := get_random_secret_key()).startswith("$"):
        pass
    return key


def run_prod(
    *args: str, code: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PROD_VARIABLES}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings.prod", **env)
    command = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.run(
        command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_the_deploy_check_is_clean_with_production_settings() -> None:
    result = run_prod(
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=random_secret_key(),
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNING" not in output.upper()


SHOW_SECURITY = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
names = ["SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE",
         "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER", "SECRET_KEY"]
client = Client()
def get(path, **headers):
    r = client.get(path, headers=headers)
    return [r.status_code, r.get("Location"), r.get("Strict-Transport-Security")]
print(json.dumps({
    **{name: getattr(settings, name) for name in names},
    "http /api/": get("/api/"),
    "http /healthz": get("/healthz"),
    "https via proxy /healthz": get("/healthz", x_forwarded_proto="https"),
}))
"""


def show_security(**env: str) -> dict:
    result = run_prod(code=SHOW_SECURITY, **{"ALLOWED_HOSTS": "testserver", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_redirects_to_https_and_sends_hsts_except_to_probes() -> None:
    key = random_secret_key()
    shown = show_security(SECRET_KEY=key, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")

    assert shown["SECRET_KEY"] == key, "the key in use is not the environment's"
    assert shown["SESSION_COOKIE_SECURE"] is shown["CSRF_COOKIE_SECURE"] is True
    assert shown["http /api/"][:2] == [301, "https://testserver/api/"]
    # Health checks and Prometheus reach the process over plain HTTP.
    assert shown["http /healthz"] == [200, None, None]
    status, _, hsts = shown["https via proxy /healthz"]
    assert status == 200
    assert hsts == "max-age=31536000; includeSubDomains; preload"


def test_without_a_proxy_header_setting_x_forwarded_proto_is_not_trusted() -> None:
    shown = show_security(SECRET_KEY=random_secret_key())

    assert shown["SECURE_PROXY_SSL_HEADER"] is None
    assert shown["https via proxy /healthz"] == [200, None, None]  # no HSTS


def test_compose_environment_serves_plain_http() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["x-app-env"].items() if k in PROD_VARIABLES}
    env.update(SECRET_KEY=random_secret_key(), ALLOWED_HOSTS="testserver")
    assert env["SECURE_SSL_REDIRECT"] == "false"

    shown = show_security(**env)

    assert shown["http /api/"][0] == 200
    assert shown["SESSION_COOKIE_SECURE"] is shown["CSRF_COOKIE_SECURE"] is False


def example_secret_key() -> str:
    text = (ROOT / ".env.example").read_text()
    return re.search(r"^SECRET_KEY=(.*)$", text, re.M).group(1)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(example_secret_key(), id="the .env.example placeholder"),
        pytest.param("django-insecure-" + "x1" * 20, id="django's insecure marker"),
        pytest.param("short-but-random-Zq8", id="too short"),
    ],
)
def test_production_refuses_a_known_or_weak_secret_key(key) -> None:
    result = run_prod(code="import django; django.setup()", SECRET_KEY=key)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_no_settings_module_assigns_secret_key_except_from_the_environment() -> None:
    for path in sorted((ROOT / "config/settings").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not any(getattr(t, "id", None) == "SECRET_KEY" for t in targets):
                continue
            value = node.value
            assert (
                isinstance(value, ast.Call)
                and ast.unparse(value.func) == "env.str"
                and isinstance(value.args[0], ast.Constant)
                and value.args[0].value == "SECRET_KEY"
            ), f"{path.name}:{node.lineno} sets SECRET_KEY from {ast.unparse(value)}"


# -- secret-looking literals in the repository ------------------------------------------

# Patterns of real credentials, searched in every tracked file. Built from pieces so
# this file does not match itself.
ANYWHERE = {
    "private key": re.compile("-----BEGIN ([A-Z]+ )?" + "PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)" + r"[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*\S"),
    "GitHub token": re.compile(r"\bgh[pousr]_" + r"[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abposr]-" + r"[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza" + r"[0-9A-Za-z_-]{35}\b"),
    "Stripe live key": re.compile(r"\b[sr]k_live_" + r"[0-9A-Za-z]{16,}"),
}
# Patterns searched outside tests: a password or secret key written into the code.
IN_CODE = {
    "password literal": re.compile(
        r"""(?i)passw(or)?d\w*["']?\s*[:=]\s*["'][^"'\s]+["']"""
    ),
    "secret key literal": re.compile(r"""SECRET_KEY\s*[:=]\s*["'][^"']+["']"""),
    "credentials in a URL": re.compile(r"\b[a-z+]+://[^/\s:@]+:[^/\s@]+@"),
}
# Searched in configuration files (YAML, .env style): an unquoted password value.
IN_CONFIG = {
    "password in configuration": re.compile(
        r"(?i)passw(or)?d\w*\s*[:=]\s*[A-Za-z0-9][^\s]*$"
    ),
}
CONFIG_SUFFIXES = {".yml", ".yaml", ".example", ".env", ".ini", ".cfg", ".toml"}
# What may match, and why: the demo data and the local development database.
ALLOWED = [
    # reservations/demo.py: the documented demo users (README, seed_demo).
    ("reservations/demo.py", "password literal", ""),
    # The development key, which config.settings.prod refuses.
    ("config/settings/base.py", "secret key literal", "dev-insecure-"),
    # The local database's role, created by infra/postgres.sh; .env.example says so.
    (None, "credentials in a URL", "://reservations:reservations@"),
    ("docker-compose.yml", "password in configuration", "PASSWORD: reservations"),
]
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".yml",
    ".yaml",
    ".toml",
    ".txt",
    ".sh",
    ".cfg",
    ".ini",
    ".json",
    ".html",
    ".js",
    ".example",
    "",
}


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def secret_findings(path: str, text: str) -> list[tuple[str, str]]:
    """(pattern name, the line) for every secret-looking match not in ALLOWED."""
    patterns = dict(ANYWHERE)
    if not path.startswith("tests/"):
        patterns |= IN_CODE
        if Path(path).suffix in CONFIG_SUFFIXES:
            patterns |= IN_CONFIG
    found = []
    for line in text.splitlines():
        for name, pattern in patterns.items():
            if not pattern.search(line):
                continue
            allowed = any(
                (where is None or where == path) and kind == name and part in line
                for where, kind, part in ALLOWED
            )
            if not allowed:
                found.append((name, line.strip()[:120]))
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    samples = {
        "private key": "-----BEGIN RSA " + "PRIVATE KEY-----",
        "AWS access key id": "key = 'AKIA" + "Z7XK2Q4RB3MNPL5W'",
        "GitHub token": "ghp_" + "a1" * 18,
        "password literal": 'connect(password="hunter2")',
        "secret key literal": 'SECRET_KEY = "abc"',
        "credentials in a URL": "redis://admin:s3cret@cache:6379/0",
    }
    for name, line in samples.items():
        assert secret_findings("app/settings.py", line) == [(name, line)], name
    line = "  KAFKA_SASL_PASSWORD: s3cret"
    assert secret_findings("deploy.yml", line) == [
        ("password in configuration", line.strip())
    ]
    assert secret_findings("tests/test_x.py", 'password="pw"') == []
    assert secret_findings("reservations/demo.py", 'DEMO_PASSWORD = "password"') == []


def test_no_tracked_file_holds_a_secret_looking_literal() -> None:
    files = tracked_files()
    assert "config/settings/base.py" in files
    assert ".env" not in files, ".env is for local secrets; it must stay untracked"
    findings = {}
    for path in files:
        file = ROOT / path
        if Path(path).suffix not in TEXT_SUFFIXES or not file.is_file():
            continue
        found = secret_findings(path, file.read_text(errors="replace"))
        if found:
            findings[path] = found
    assert findings == {}
