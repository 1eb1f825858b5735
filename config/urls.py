"""URL map: admin, the versioned API, login, its OpenAPI schema and docs, health.

Every path under /api/ that no view matches ends at `api_not_found`, and the handlers
below keep Django's other error pages for /api/ in the API's JSON shape.
"""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api_docs import OfflineRedocView
from config.api_root import api_root
from config.auth_api import AuthTokenCreateApi
from config.error_views import api_not_found
from config.health import healthz, metrics_view, readyz

handler400 = "config.error_views.bad_request"
handler403 = "config.error_views.permission_denied"
handler404 = "config.error_views.page_not_found"
handler500 = "config.error_views.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", api_root, name="api-root"),
    path("api/auth/token/", AuthTokenCreateApi.as_view(), name="auth-token"),
    # Session login and logout pages of the browsable API.
    path("api/auth/", include("rest_framework.urls")),
    path("api/", include("reservations.urls")),
    path("api/", include("payments.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"
    ),
    path("api/redoc/", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
    re_path(r"^api/(?P<unmatched>.*)$", api_not_found),
]
