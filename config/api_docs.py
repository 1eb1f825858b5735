"""The API's documentation pages, served without any outside network."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView
from rest_framework.request import Request

# gunicorn's limit_request_line (config/gunicorn.py), the most it allows but "none".
LIMIT_REQUEST_LINE = 8190


class OfflineRedocView(SpectacularRedocView):
    """ReDoc from the sidecar's files, and no image from elsewhere.

    ReDoc's footer shows Redocly's logo from their CDN; the policy keeps the browser
    from asking for it (the logo hides itself when it cannot load).
    """

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = "img-src 'self' data: blob:"
        return response


def document_front_door_errors(result: dict, **_kwargs: Any) -> dict:
    """Add to every operation the errors that any request can meet before its view.

    drf-spectacular documents what each view returns; these come from the layers
    around it (config.error_views, config.middleware, gunicorn), so without this hook
    the schema would not list statuses the server does send.
    """
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault(
                "503",
                {
                    "description": "database_unavailable: the database is down or "
                    "busy; retry after the Retry-After header's seconds.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": error,
                },
            )
            responses.setdefault(
                "414",
                {
                    "description": "The URL is longer than the server's limit "
                    f"({LIMIT_REQUEST_LINE} bytes); answered by the HTTP server "
                    "before the API, as a short HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
            )
            if "requestBody" in operation:
                responses.setdefault(
                    "413",
                    {
                        "description": "request_too_large: the body is over the "
                        "limit given in details.max_bytes.",
                        "content": error,
                    },
                )
                responses.setdefault(
                    "415",
                    {
                        "description": "unsupported_media_type: send JSON.",
                        "content": error,
                    },
                )
    return result
