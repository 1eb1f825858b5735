"""Every endpoint under /api/, from the URL resolver and the OpenAPI schema.

The security tests take their rows from here, so an endpoint added to the URL map
shows up in them (and fails them until it has an entry in their tables).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# The catch-all that answers every other /api/ path with a JSON 404.
CATCH_ALL = "api/(?P<unmatched>.*)"


@functools.cache
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def schema_operations() -> set[str]:
    """'METHOD /api/path/{param}/' for every operation in the OpenAPI schema."""
    return {
        f"{method.upper()} {path}"
        for path, item in schema()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def schema_writes() -> list[str]:
    """Every write in the schema that a logged-in user (token or session) makes.

    The token endpoint, which takes no authentication, is not one of them.
    """
    writes = []
    for operation in sorted(schema_operations()):
        method, path = operation.split(" ", 1)
        security = schema()["paths"][path][method.lower()].get("security", [])
        if method != "GET" and {"cookieAuth": []} in security:
            writes.append(operation)
    return writes


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        else:
            yield route, pattern


def _methods(pattern: URLPattern) -> set[str]:
    view = getattr(pattern.callback, "view_class", None)
    if view is None:  # a plain function view: every method reaches it
        return set(HTTP_METHODS)
    return {m for m in HTTP_METHODS if m in view.http_method_names and hasattr(view, m)}


def resolver_operations() -> set[str]:
    """'METHOD /api/path/{param}/' for every view the URL resolver has under /api/."""
    operations = set()
    for route, pattern in _walk(get_resolver().url_patterns):
        if not route.startswith("api/") or route == CATCH_ALL:
            continue
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        operations |= {f"{m.upper()} {path}" for m in _methods(pattern)}
    return operations
