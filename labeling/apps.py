"""The labeling app's Django configuration (the human side: projects, taxonomies, items, the queue, exports)."""

from __future__ import annotations

from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    default_auto_field = "django.db.models.BigAutoField"
