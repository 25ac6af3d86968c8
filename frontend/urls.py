"""The pages' URL routes (labelling, taxonomy editor, dashboard, adjudication, item history) and login/logout."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views, views_manage, views_quality, views_taxonomy

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
    # Running a project: new project, members, import, export, models (frontend/views_manage.py).
    path("projects/new/", views_manage.project_new, name="project-new"),
    path("projects/<slug:slug>/members/", views_manage.members, name="members"),
    path("projects/<slug:slug>/settings/", views_manage.settings_page, name="settings"),
    path("projects/<slug:slug>/import/", views_manage.import_page, name="import"),
    path("projects/<slug:slug>/export/", views_manage.export_page, name="export"),
    path("projects/<slug:slug>/models/", views_manage.models_page, name="models"),
    path("", views.home, name="home"),
]
