"""GET /api/projects/{slug}/languages/, POST /api/projects/{slug}/embedder and the two commands behind them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command

from labeling.models import AuditEvent, Item, Project
from learning.models import LearningJob
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

ARABIC = "مرحبا، هل يمكنك مساعدتي في طلبي من فضلك؟"
ENGLISH = "Could you help me with my order, please?"


def _items(project: Project, language: str | None, text: str, n: int) -> None:
    for i in range(n):
        ItemFactory(project=project, text=f"{text} {i}", language=language)


def test_language_mix_counts_and_recommends(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    _items(project, "ar", ARABIC, 15)
    _items(project, "en", ENGLISH, 10)
    _items(project, "", "🙂", 2)
    _items(project, None, ENGLISH, 1)
    response = api_as(cast["users"]["reviewer"]).get("/api/projects/sms/languages/")
    assert response.status_code == 200
    assert response.json() == {"counts": {"ar": 15, "en": 10}, "undetermined": 2, "undetected": 1,
                               "embedder": "minilm", "recommended_embedder": "multilingual"}


def test_embedder_switch_audits_requests_embedding_and_is_idempotent(
        cast: dict[str, Any], api_as: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = api_as(cast["users"]["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/projects/sms/embedder", {"embedder": "multilingual"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"embedder": "multilingual", "changed": True}
    project = Project.objects.get(slug="sms")
    assert project.embedder == "multilingual"
    event = AuditEvent.objects.get(action="project.embedder")
    assert (event.actor_id, event.data) == (cast["users"]["admin"].pk, {"from": "minilm", "to": "multilingual"})
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).dirty is True
    again = client.post("/api/projects/sms/embedder", {"embedder": "multilingual"}, format="json")
    assert again.json() == {"embedder": "multilingual", "changed": False}
    assert AuditEvent.objects.filter(action="project.embedder").count() == 1


def test_embedder_switch_refuses_unknown_names_and_other_roles(cast: dict[str, Any], api_as: Any) -> None:
    bad = api_as(cast["users"]["admin"]).post("/api/projects/sms/embedder", {"embedder": "bert"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["field"] == "embedder"
    denied = api_as(cast["users"]["ml_engineer"]).post("/api/projects/sms/embedder", {"embedder": "multilingual"},
                                                       format="json")
    assert denied.status_code == 403
    assert Project.objects.get(slug="sms").embedder == "minilm"
    assert not AuditEvent.objects.filter(action="project.embedder").exists()


def test_detect_languages_command_fills_in_only_the_undetected(cast: dict[str, Any]) -> None:
    project = cast["project"]
    _items(project, None, ARABIC, 3)
    _items(project, "en", "كلام عربي لا يعاد فحصه", 1)  # already detected: left alone, even if wrong
    out = io.StringIO()
    call_command("detect_languages", "--project", "sms", stdout=out)
    assert json.loads(out.getvalue()) == {"detected": 3, "counts": {"ar": 3, "en": 1}, "undetermined": 0,
                                          "undetected": 0, "embedder": "minilm", "recommended_embedder": None}
    assert sorted(Item.objects.filter(project=project).values_list("language", flat=True)) == ["ar", "ar", "ar", "en"]
    again = io.StringIO()
    call_command("detect_languages", "--project", "sms", stdout=again)
    assert json.loads(again.getvalue())["detected"] == 0


def test_set_embedder_command(cast: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("set_embedder", "--project", "sms", "--embedder", "multilingual", stdout=out)
    assert out.getvalue().strip() == "sms: embedder multilingual"
    assert Project.objects.get(slug="sms").embedder == "multilingual"
