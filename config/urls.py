"""Top-level routes: the API under /api/, the schema, Django admin, and the browser UI at /."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include("labeling.api.urls")),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]
