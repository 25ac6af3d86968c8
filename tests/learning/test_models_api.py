"""GET /api/projects/{slug}/models/ (learning/api.py): newest first, staleness, scoping, limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from learning.models import ModelVersion
from tests.factories import ItemFactory
from tests.learning.support import annotate

URL = "/api/projects/{slug}/models/"


def _versions(project: Any, reviewer: Any) -> list[int]:
    """Three versions: v1 superseded (saw 1 label), v2 active (saw 3), v3 failed (saw 4); 5 labels exist."""
    items = [ItemFactory(project=project) for _ in range(5)]
    ids = [annotate(item, reviewer, ["spam"]).pk for item in items]
    now = timezone.now()
    specs = [(1, "superseded", ids[0], 1), (2, "active", ids[2], 3), (3, "failed", ids[3], 0)]
    for version, status, seen, n_labels in specs:
        ModelVersion.objects.create(
            project=project, version=version, status=status, fingerprint=f"fp{version}", max_annotation_id=seen,
            embedder="hashing-v1-384", strategy="margin_exploit", n_labels=n_labels,
            metrics={"cv": {"macro_f1": 0.5 + version / 10}}, timings={"total": float(version)},
            error="ValueError: boom" if status == "failed" else "",
        )
    ModelVersion.objects.filter(project=project).update(created_at=now - timedelta(seconds=120))
    return ids


def test_lists_versions_newest_first_with_staleness(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    _versions(project, cast["users"]["reviewer"])
    response = api_as(cast["users"]["reviewer"]).get(URL.format(slug="sms"))
    assert response.status_code == 200
    body = response.json()
    assert [v["version"] for v in body] == [3, 2, 1]
    assert [(v["status"], v["active"], v["n_labels"], v["labels_since"]) for v in body] == [
        ("failed", False, 0, 1), ("active", True, 3, 2), ("superseded", False, 1, 4)]
    active = body[1]
    assert active["metrics"] == {"cv": {"macro_f1": 0.7}}
    assert active["timings"] == {"total": 2.0}
    assert 119 <= active["age_seconds"] < 3600
    assert body[0]["error"] == "ValueError: boom"
    assert set(active) == {"version", "created_at", "n_labels", "status", "metrics", "active", "labels_since",
                           "age_seconds", "timings", "activated_at", "strategy", "embedder", "exploration_rate",
                           "cold_start", "n_pool", "n_ranked", "error"}


def test_limit_caps_the_list(cast: dict[str, Any], api_as: Any) -> None:
    _versions(cast["project"], cast["users"]["reviewer"])
    client = api_as(cast["users"]["ml_engineer"])
    assert [v["version"] for v in client.get(URL.format(slug="sms") + "?limit=2").json()] == [3, 2]
    for bad in ("0", "501", "two"):
        response = client.get(URL.format(slug="sms") + f"?limit={bad}")
        assert response.status_code == 400
        assert response.json() == {"detail": "limit: must be an integer from 1 to 500", "code": "invalid",
                                   "field": "limit"}


def test_an_empty_project_lists_nothing(cast: dict[str, Any], api_as: Any) -> None:
    assert api_as(cast["users"]["admin"]).get(URL.format(slug="sms")).json() == []


@pytest.mark.parametrize("who, status", [("outsider", 404), ("anonymous", 401)])
def test_non_members_see_nothing(cast: dict[str, Any], api_as: Any, who: str, status: int) -> None:
    _versions(cast["project"], cast["users"]["reviewer"])
    response = api_as(cast["users"][who]).get(URL.format(slug="sms"))
    assert response.status_code == status
    assert "version" not in response.content.decode()


def test_unknown_project_is_404(cast: dict[str, Any], api_as: Any) -> None:
    assert api_as(cast["users"]["admin"]).get(URL.format(slug="nope")).status_code == 404


def test_schema_documents_the_route(cast: dict[str, Any], api_as: Any) -> None:
    schema = api_as(cast["users"]["admin"]).get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/projects/{slug}/models/"]["get"]
    assert operation["operationId"] == "project_models_list"
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["before", "limit"]
