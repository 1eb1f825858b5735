"""The OpenAPI schema covers every endpoint, documents errors, and is valid."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

import payments.urls
import reservations.urls

ENDPOINTS = [
    (pattern, method)
    for module in (reservations.urls, payments.urls)
    for pattern in module.urlpatterns
    for method in ("get", "post")
    if hasattr(pattern.callback.view_class, method)
]
WRITES = [(pattern, method) for pattern, method in ENDPOINTS if method == "post"]


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def openapi_path(pattern) -> str:
    return "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))


def ids(endpoints) -> list[str]:
    return [f"{method.upper()} {openapi_path(p)}" for p, method in endpoints]


def test_there_are_endpoints_to_check():
    assert len(ENDPOINTS) == 16
    assert len(WRITES) == 4


@pytest.mark.parametrize(("pattern", "method"), ENDPOINTS, ids=ids(ENDPOINTS))
def test_every_endpoint_is_in_the_schema(schema, pattern, method):
    assert method in schema["paths"][openapi_path(pattern)]


@pytest.mark.parametrize(("pattern", "method"), ENDPOINTS, ids=ids(ENDPOINTS))
def test_every_endpoint_documents_its_errors_with_the_error_body(
    schema, pattern, method
):
    responses = schema["paths"][openapi_path(pattern)][method]["responses"]
    # 414 is gunicorn's, answered before Django as HTML (config.api_docs says so).
    errors = {
        code: r
        for code, r in responses.items()
        if code.startswith(("4", "5")) and code != "414"
    }
    assert errors
    assert responses["414"]["content"] == {"text/html": {"schema": {"type": "string"}}}
    for response in errors.values():
        ref = response["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/Error"


@pytest.mark.parametrize(("pattern", "method"), WRITES, ids=ids(WRITES))
def test_every_write_takes_an_idempotency_key_and_documents_429_and_422(
    schema, pattern, method
):
    operation = schema["paths"][openapi_path(pattern)][method]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    assert {"400", "422", "429"} <= set(operation["responses"])


def test_the_error_body_is_a_component(schema):
    error = schema["components"]["schemas"]["Error"]
    body = schema["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ErrorBody"
    assert set(body["required"]) == {"code", "message", "details"}


def test_the_schema_validates_against_the_openapi_specification(schema):
    validate_schema(schema)  # raises jsonschema.ValidationError when invalid


def test_the_schema_generates_without_warnings(tmp_path):
    """`spectacular --fail-on-warn` fails on any warning or error while generating."""
    out = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert "/api/reservations/create/" in yaml.safe_load(out.read_text())["paths"]
