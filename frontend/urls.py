"""The pages' URL routes (labelling, taxonomy editor, dashboard, adjudication, item history) and login/logout."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views, views_quality, views_taxonomy

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/<slug:slug>/label/", views.label, name="label"),
    # Taxonomy editor, history and guidelines (frontend/views_taxonomy.py).
    path("projects/<slug:slug>/taxonomy/", views_taxonomy.taxonomy_editor, name="taxonomy-editor"),
    path("projects/<slug:slug>/taxonomy/history/", views_taxonomy.taxonomy_history, name="taxonomy-history"),
    path("projects/<slug:slug>/guidelines/", views_taxonomy.guidelines, name="guidelines"),
    # Quality: the dashboard and the adjudication queue (frontend/views_quality.py).
    path("projects/<slug:slug>/dashboard/", views_quality.dashboard, name="dashboard"),
    path("projects/<slug:slug>/adjudication/", views_quality.adjudication, name="adjudication"),
    path("projects/<slug:slug>/items/history/", views_quality.item_history_lookup, name="item-history-lookup"),
    path("projects/<slug:slug>/items/<int:item_id>/history/", views_quality.item_history, name="item-history"),
    path("", views.home, name="home"),
]
