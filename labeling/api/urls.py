"""API routes. Each area keeps its views in its own module (views_<area>.py)."""

from __future__ import annotations

from django.urls import path

from labeling.api import views_projects

urlpatterns = [
    path("auth/token/", views_projects.TokenView.as_view(), name="api-token"),
    path("projects/", views_projects.ProjectListView.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", views_projects.ProjectDetailView.as_view(), name="api-project"),
]
