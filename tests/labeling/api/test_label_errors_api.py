"""GET /api/projects/{slug}/label-errors/: counts per state and the suspected answers, for VIEW_STATS roles."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from labeling.models import Candidate, SuspectedError, SuspicionState
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, ProjectFactory, member


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="le", taxonomy=SMS_TAXONOMY)
    items = [ItemFactory(project=project, external_id=f"m{i}", text=f"message {i}") for i in range(3)]
    SuspectedError.objects.record(project_id=project.pk, model_version=4, candidates=[
        Candidate(item_id=items[0].pk, given_label="ham", suggested_label="spam", self_confidence=0.031, rank=0),
        Candidate(item_id=items[1].pk, given_label="spam", suggested_label="ham", self_confidence=0.12, rank=1)])
    SuspectedError.objects.filter(item=items[1]).update(state=SuspicionState.CLEARED, resolved_labels=["spam"])
    return {"project": project, "items": items,
            **{role: member(project, username=role, role=role) for role in ("reviewer", "policy_lead", "ml_engineer")}}


def _get(user: Any, url: str) -> Any:
    client = APIClient()
    client.force_authenticate(user)
    return client.get(url)


def test_leads_and_engineers_see_counts_and_candidates(world: dict[str, Any]) -> None:
    for role in ("policy_lead", "ml_engineer"):
        response = _get(world[role], "/api/projects/le/label-errors/")
        assert response.status_code == 200
        body = response.json()
        assert body["counts"] == {"new": 1, "recheck": 0, "adjudication": 0, "confirmed": 0, "cleared": 1,
                                  "skipped": 0}
        assert body["count"] == 2
        assert [(r["item"]["external_id"], r["given_label"], r["suggested_label"], r["self_confidence"], r["state"],
                 r["open"], r["resolved_labels"], r["model_version"]) for r in body["results"]] == [
            ("m0", "ham", "spam", 0.031, "new", True, None, 4),
            ("m1", "spam", "ham", 0.12, "cleared", False, ["spam"], 4)]


def test_state_filter_and_bad_input(world: dict[str, Any]) -> None:
    body = _get(world["policy_lead"], "/api/projects/le/label-errors/?state=cleared").json()
    assert [r["item"]["external_id"] for r in body["results"]] == ["m1"]
    assert body["count"] == 1
    bad = _get(world["policy_lead"], "/api/projects/le/label-errors/?state=bogus")
    assert bad.status_code == 400
    assert "state" in bad.json()["detail"]


def test_reviewers_may_not_look(world: dict[str, Any]) -> None:
    assert _get(world["reviewer"], "/api/projects/le/label-errors/").status_code == 403


def test_recording_the_same_item_twice_keeps_one_suspicion(world: dict[str, Any]) -> None:
    again = SuspectedError.objects.record(project_id=world["project"].pk, model_version=5, candidates=[
        Candidate(item_id=world["items"][0].pk, given_label="ham", suggested_label="spam", self_confidence=0.02,
                  rank=0)])
    assert again == 0
    assert list(SuspectedError.objects.filter(item=world["items"][0]).values_list("model_version", flat=True)) == [4]
