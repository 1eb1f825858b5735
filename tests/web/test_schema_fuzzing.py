"""Schemathesis fuzzes every operation of the served schema against gunicorn.

Every response must be documented (status, content type, headers) and match its
schema, and none may be a 5xx. Business refusals of valid-looking input (a 409 for a
taken seat) are the API working, so the checks that would call them failures
(positive_data_acceptance) are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from tests.web.server import running_gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    call_command("seed_demo", verbosity=0)
    token = Token.objects.get(user__username="alice").key
    generous = "100000/min"
    with running_gunicorn(
        GUNICORN_WORKERS="2",
        API_WRITE_THROTTLE_RATE=generous,
        API_AUTH_THROTTLE_RATE=generous,
    ) as url:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{url}/api/schema/",
                "--header",
                f"Authorization: Token {token}",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--workers",
                "2",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert selected and selected[1] == selected[2], run.stdout[-3000:]
    assert f"Tested: {selected[1]}" in run.stdout, run.stdout[-3000:]
