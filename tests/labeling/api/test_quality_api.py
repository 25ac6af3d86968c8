"""The quality endpoints: who may call them, their exact shapes, and errors that change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from labeling.api import serializers_quality as shapes
from labeling.models import Adjudication, Annotation, AuditEvent, Item
from tests.factories import ItemFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Submits and decisions ask for a retrain on commit; nothing here needs the broker.
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)

STATS = ["stats/", "stats/agreement", "stats/reviewers", "stats/prevalence", "stats/queue-health", "stats/timeline"]
ALLOWED_STATS = {"policy_lead", "ml_engineer", "admin"}
ALLOWED_ADJUDICATION = {"policy_lead", "admin"}


def seed(cast: dict[str, Any]) -> tuple[Item, Adjudication]:
    """Two reviewers who disagree on one item (with its adjudication) and agree on another."""
    project = cast["project"]
    users = cast["users"]
    other = member(project, username="reviewer2", role="reviewer")
    disputed = ItemFactory(project=project, external_id="sms-1", text="<b>WIN</b> a prize", n_required=2)
    calm = ItemFactory(project=project, external_id="sms-2", n_required=2)
    for item, first, second in ((disputed, "ham", "spam"), (calm, "ham", "ham")):
        for reviewer, labels in ((users["reviewer"], [first]), (other, [second])):
            Annotation.objects.create(project=project, item=item, reviewer=reviewer, labels=labels,
                                      taxonomy_version=project.current_taxonomy_version,
                                      selection_reason="exploration", model_version=1, inclusion_probability=0.1,
                                      comment=f"{reviewer.username} thinks {labels[0]}")
        Item.objects.filter(pk=item.pk).update(n_done=2)
    adjudication = Adjudication.objects.create(project=project, item=disputed, reason="disagreement")
    return disputed, adjudication


@pytest.mark.parametrize("path", STATS)
def test_stats_authorisation(cast: dict[str, Any], api_as: Any, path: str) -> None:
    seed(cast)
    for role, user in cast["users"].items():
        response = api_as(user).get(f"/api/projects/sms/{path}")
        if role in ALLOWED_STATS:
            assert response.status_code == 200, (role, response.content)
        elif role == "anonymous":
            assert response.status_code in (401, 403), role
        elif role == "outsider":
            assert response.status_code == 404, role  # the project's existence is not revealed
        else:
            assert response.status_code == 403, role
            assert response.json()["detail"] == "your role (reviewer) may not view stats here"


def _keys_of(serializer: serializers.Serializer) -> set[str]:  # type: ignore[type-arg]
    return set(serializer.fields)


@pytest.mark.parametrize(("path", "shape"), [
    ("stats/", shapes.StatsSummarySerializer), ("stats/agreement", shapes.AgreementSerializer),
    ("stats/reviewers", shapes.ReviewerStatsSerializer), ("stats/prevalence", shapes.PrevalenceSerializer),
    ("stats/queue-health", shapes.QueueHealthSerializer), ("stats/timeline", shapes.TimelineSerializer),
    ("adjudications/", shapes.AdjudicationPageSerializer),
])
def test_responses_have_the_documented_keys(cast: dict[str, Any], api_as: Any, path: str, shape: Any) -> None:
    seed(cast)
    body = api_as(cast["users"]["policy_lead"]).get(f"/api/projects/sms/{path}").json()
    assert set(body) == _keys_of(shape())


def test_summary_figures(cast: dict[str, Any], api_as: Any) -> None:
    seed(cast)
    body = api_as(cast["users"]["ml_engineer"]).get("/api/projects/sms/stats/").json()
    assert body["project"] == "sms"
    assert body["progress"] == {"items": 2, "gold_items": 0, "finished": 2, "open": 0, "labelled": 2,
                                "annotations": 4, "reviewers": 2}
    # Units (ham, spam) and (ham, ham): n_ham = 3, n_spam = 1, D_o = 2, D_e = (16 - 9 - 1) / 3 = 2: alpha 0.
    assert (body["agreement"]["alpha"], body["agreement"]["n_units"]) == (0.0, 2)
    assert body["adjudications"] == {"pending": 1, "decided": 0}
    assert body["alerts"] == []
    spam = next(row for row in body["prevalence"]["labels"] if row["key"] == "spam")
    # Everything is labelled: a census. The disputed item counts half spam (one of two reviewers).
    assert (spam["estimate"], spam["method"]) == (0.25, "census")


def test_adjudication_queue_shows_every_answer_as_data(cast: dict[str, Any], api_as: Any) -> None:
    _item, adjudication = seed(cast)
    body = api_as(cast["users"]["policy_lead"]).get("/api/projects/sms/adjudications/?state=pending").json()
    assert (body["count"], body["limit"], body["offset"]) == (1, 50, 0)
    (entry,) = body["results"]
    assert entry["id"] == adjudication.pk
    assert entry["item"] == {"id": adjudication.item_id, "external_id": "sms-1", "text": "<b>WIN</b> a prize",
                             "meta": {}}
    assert [(a["reviewer"], a["labels"], a["comment"]) for a in entry["answers"]] == [
        ("reviewer", ["ham"], "reviewer thinks ham"), ("reviewer2", ["spam"], "reviewer2 thinks spam")]
    assert (entry["state"], entry["reason"], entry["labels"], entry["decided_by"]) == (
        "pending", "disagreement", None, None)
    single = api_as(cast["users"]["admin"]).get(f"/api/projects/sms/adjudications/{adjudication.pk}/").json()
    assert single == entry


def test_adjudication_authorisation_changes_nothing(cast: dict[str, Any], api_as: Any) -> None:
    _item, adjudication = seed(cast)
    url = f"/api/projects/sms/adjudications/{adjudication.pk}/decide"
    for role, user in cast["users"].items():
        if role in ALLOWED_ADJUDICATION:
            continue
        client = api_as(user)
        listed = client.get("/api/projects/sms/adjudications/")
        decided = client.post(url, {"labels": ["spam"]}, format="json")
        opened = client.post("/api/projects/sms/adjudications/", {"external_id": "sms-2"}, format="json")
        expected = {"anonymous": (401, 403), "outsider": (404,)}.get(role, (403,))
        assert {listed.status_code, decided.status_code, opened.status_code} <= set(expected), role
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.labels) == ("pending", None)
    assert Adjudication.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="adjudication.").exists()


def test_decide_through_the_api(cast: dict[str, Any], api_as: Any) -> None:
    _item, adjudication = seed(cast)
    lead = api_as(cast["users"]["policy_lead"])
    url = f"/api/projects/sms/adjudications/{adjudication.pk}/decide"
    bad = lead.post(url, {"labels": ["eggs"]}, format="json")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid" and "unknown label 'eggs'" in bad.json()["detail"]
    missing = lead.post(url, {"note": "no labels"}, format="json")
    assert (missing.status_code, missing.json()["field"]) == (400, "labels")
    adjudication.refresh_from_db()
    assert adjudication.state == "pending"
    ok = lead.post(url, {"labels": ["spam"], "note": "prize scam"}, format="json")
    assert ok.status_code == 200
    assert (ok.json()["state"], ok.json()["labels"], ok.json()["note"], ok.json()["decided_by"],
            ok.json()["taxonomy_version"]) == ("decided", ["spam"], "prize scam", "policy_lead", 1)
    again = lead.post(url, {"labels": ["ham"]}, format="json")
    assert again.status_code == 409 and "revise=true" in again.json()["detail"]
    revised = lead.post(url, {"labels": ["ham"], "revise": True}, format="json")
    assert (revised.status_code, revised.json()["labels"]) == (200, ["ham"])
    gone = lead.post("/api/projects/sms/adjudications/999999/decide", {"labels": ["ham"]}, format="json")
    assert gone.status_code == 404


def test_another_projects_adjudication_is_not_found(cast: dict[str, Any], api_as: Any) -> None:
    foreign = ItemFactory(project=cast["other_project"], external_id="theirs")
    theirs = Adjudication.objects.create(project=cast["other_project"], item=foreign, reason="manual")
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.get(f"/api/projects/sms/adjudications/{theirs.pk}/").status_code == 404
    assert lead.post(f"/api/projects/sms/adjudications/{theirs.pk}/decide", {"labels": ["ham"]},
                     format="json").status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == "pending"


def test_open_by_hand_and_list_validation(cast: dict[str, Any], api_as: Any) -> None:
    seed(cast)
    lead = api_as(cast["users"]["policy_lead"])
    created = lead.post("/api/projects/sms/adjudications/", {"external_id": "sms-2", "note": "check"}, format="json")
    assert created.status_code == 201
    assert (created.json()["reason"], created.json()["note"], created.json()["item"]["external_id"]) == (
        "manual", "check", "sms-2")
    existing = lead.post("/api/projects/sms/adjudications/", {"external_id": "sms-2"}, format="json")
    assert (existing.status_code, existing.json()["id"]) == (200, created.json()["id"])
    unknown = lead.post("/api/projects/sms/adjudications/", {"external_id": "nope"}, format="json")
    assert (unknown.status_code, unknown.json()["field"]) == (404, "external_id")
    for query, field in (("state=maybe", "state"), ("limit=0", "limit"), ("limit=500", "limit"),
                         ("offset=-1", "offset")):
        response = lead.get(f"/api/projects/sms/adjudications/?{query}")
        assert (response.status_code, response.json()["field"]) == (400, field), query
    page = lead.get("/api/projects/sms/adjudications/?limit=1&offset=1").json()
    assert (page["count"], len(page["results"]), page["results"][0]["item"]["external_id"]) == (2, 1, "sms-2")


def test_schema_documents_the_quality_endpoints(api_as: Any, cast: dict[str, Any]) -> None:
    schema = api_as(cast["users"]["admin"]).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/projects/{slug}/stats/", "/api/projects/{slug}/stats/prevalence",
                 "/api/projects/{slug}/adjudications/", "/api/projects/{slug}/adjudications/{adjudication_id}/decide"):
        assert path in schema["paths"], path
