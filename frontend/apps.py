"""The frontend app's Django configuration (server-rendered pages and their static files)."""

from __future__ import annotations

from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
