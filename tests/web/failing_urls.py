"""The project's URLs plus views that fail on purpose, for the error-page tests."""

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from config import urls


def crash(_request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def database_gone(_request: HttpRequest) -> HttpResponse:
    raise OperationalError("connection refused")


class DatabaseGoneApi(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> HttpResponse:
        raise OperationalError("couldn't get a connection after 2.00 sec")


handler400 = urls.handler400
handler403 = urls.handler403
handler404 = urls.handler404
handler500 = urls.handler500

urlpatterns = [
    path("api/test/crash/", crash),
    path("api/test/database-gone/", database_gone),
    path("api/test/database-gone-drf/", DatabaseGoneApi.as_view()),
    path("test/database-gone/", database_gone),
    path("test/crash/", crash),
    *urls.urlpatterns,
]
