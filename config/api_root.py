"""The API's front page: what there is and where."""

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([AllowAny])
def api_root(request: Request) -> Response:
    return Response(
        {
            "schema": reverse("schema", request=request),
            "docs": reverse("api-docs", request=request),
            "redoc": reverse("redoc", request=request),
            "token": reverse("auth-token", request=request),
            "login": reverse("rest_framework:login", request=request),
            "admin": request.build_absolute_uri("/admin/"),
        }
    )
