"""The learning app's Django configuration (model versions, the vector cache, jobs and workers)."""

from __future__ import annotations

from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "learning"
    default_auto_field = "django.db.models.BigAutoField"
