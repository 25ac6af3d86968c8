"""Top-level routes: the API under /api/, the schema, Django admin, and the browser UI at /."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from config.health import HealthView
from learning.api import EmbeddingStatusView, ModelVersionListView

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/health/", HealthView.as_view(), name="api-health"),
    # Before the labeling include, so that its project-detail routes cannot shadow it.
    path("api/projects/<slug:slug>/models/", ModelVersionListView.as_view(), name="api-project-models"),
    path("api/projects/<slug:slug>/embedding/", EmbeddingStatusView.as_view(), name="api-project-embedding"),
    path("api/", include("labeling.api.urls")),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]
