"""Shared fixtures: a small cast of users, one per role, and a project they belong to.

With ``CI`` set, a test that needs a service (PostgreSQL, Redis, Chromium) fails
instead of skipping: see ``require_service``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.browser import chromium, page, sent_tasks
from tests.factories import ProjectFactory, UserFactory, member

SMS_TAXONOMY: dict[str, Any] = {
    "name": "SMS moderation",
    "multi_label": False,
    "labels": [
        {"key": "ham", "name": "Ham", "description": "Ordinary personal message."},
        {"key": "spam", "name": "Spam", "description": "Unsolicited commercial or fraudulent message."},
    ],
}


def shared_datasets() -> Path:
    """../shared/data beside the checkout (as CI lays it out), else the workplace's copy."""
    for candidate in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "data"


SHARED_DATA = shared_datasets()


def require_service(name: str, available: bool, why: str) -> None:
    """Skip locally when a service is missing, but fail under CI: a skipped check guards nothing."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required under CI: {why}")
    pytest.skip(f"{name} unavailable: {why}")


def using_postgres() -> bool:
    engine: str = settings.DATABASES["default"]["ENGINE"]
    return engine.endswith("postgresql")


@pytest.fixture(autouse=True)
def _broker_backoff_reset() -> Any:
    """learning.jobs's per-process broker state (the send back-off, the Redis run_id): never across tests."""
    from learning import jobs

    jobs._broker_down_until = 0.0
    jobs._broker_run_id = None
    yield
    jobs._broker_down_until = 0.0
    jobs._broker_run_id = None


# What a test that needs Redis says when there is none (a failure under CI, a skip elsewhere).
REDIS_NEEDED = "set REDIS_URL=redis://..., or run `make test`, which starts a private Redis"


@pytest.fixture
def postgres_only() -> None:
    require_service("PostgreSQL", using_postgres(),
                    "set DATABASE_URL=postgres://..., or run `make test`, which starts a private PostgreSQL")


def add_project_permission() -> Any:
    """Django's ``labeling.add_project`` permission: who may create projects by default (SIFT_PROJECT_CREATORS)."""
    from django.contrib.auth.models import Permission

    return Permission.objects.get(codename="add_project", content_type__app_label="labeling")


@pytest.fixture
def cast(db: Any) -> dict[str, Any]:
    """A project with one user per role, plus an outsider who belongs to another project."""
    project = ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY)
    users = {
        role: member(project, username=role, role=role)
        for role in ("reviewer", "policy_lead", "ml_engineer", "admin")
    }
    # The project's admin is also a site administrator, allowed to create projects (SIFT_PROJECT_CREATORS).
    users["admin"].user_permissions.add(add_project_permission())
    other_project = ProjectFactory(slug="other", taxonomy=SMS_TAXONOMY)
    users["outsider"] = member(other_project, username="outsider", role="admin")
    users["anonymous"] = None
    return {"project": project, "other_project": other_project, "users": users}


@pytest.fixture
def api_as() -> Any:
    """``api_as(user)`` gives an APIClient authenticated by token as ``user`` (None: anonymous)."""

    def make(user: Any) -> APIClient:
        from rest_framework.authtoken.models import Token

        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


__all__ = ["REDIS_NEEDED", "SMS_TAXONOMY", "UserFactory", "chromium", "page", "require_service", "sent_tasks",
           "using_postgres"]
