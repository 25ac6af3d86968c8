"""The item history (API and page): every answer with its comment, in order, and the adjudication state, for
policy leads and admins only; text is escaped, never rendered; other projects' items are 404."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from labeling.models import Adjudication, Annotation, AuditEvent, Item, Project, SelectionReason
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

V1: dict[str, Any] = {"name": "SMS", "multi_label": False,
                      "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"}]}
V2: dict[str, Any] = {"name": "SMS", "multi_label": False,
                      "labels": [{"key": "ham", "name": "Ham"},
                                 {"key": "spam", "name": "Spam", "children": [{"key": "spam/scam", "name": "Scam"},
                                                                             {"key": "spam/promo", "name": "Promo"}]}]}
EVIL = '<script>window.__pwned=1</script><img src=x onerror=alert(1)> call 07700 900123 or a@b.example'
T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def answer(project: Project, item: Item, reviewer: Any, labels: list[str], *, comment: str = "",
           minutes: int = 0, lead: int | None = None, reason: str = SelectionReason.UNCERTAINTY) -> Annotation:
    version = Project.objects.get(pk=project.pk).current_taxonomy_version
    assert version is not None
    annotation = Annotation.objects.create(project=project, item=item, reviewer=reviewer, taxonomy_version=version,
                                           labels=labels, comment=comment, lead_time_ms=lead,
                                           selection_reason=reason, model_version=3)
    Annotation.objects.filter(pk=annotation.pk).update(created_at=T0 + timedelta(minutes=minutes))
    return annotation


@pytest.fixture
def world(db: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    project = ProjectFactory(slug="hist", taxonomy=V1, overlap=2)
    users = {role: member(project, username=role, role=role)
             for role in ("reviewer", "policy_lead", "ml_engineer", "admin")}
    users["bob"] = member(project, username="bob", role="reviewer")
    other = ProjectFactory(slug="other", taxonomy=V1)
    users["outsider"] = member(other, username="outsider", role="admin")
    item = ItemFactory(project=project, external_id="x<1>", text="free <b>prize</b>")
    first = answer(project, item, users["reviewer"], ["spam"], comment=EVIL, minutes=1, lead=4200,
                   reason=SelectionReason.EXPLOITATION)
    taxonomy_draft_save(actor=users["policy_lead"], project=project, document=V2, migrations=[
        {"kind": "split", "sources": ["spam"], "targets": ["spam/scam", "spam/promo"]}])
    taxonomy_draft_publish(actor=users["policy_lead"], project=project, changelog="split spam")
    second = answer(project, item, users["bob"], ["ham"], comment="fine\nreally", minutes=2)
    Adjudication.objects.create(project=project, item=item, reason=Adjudication.Reason.DISAGREEMENT)
    other_item = ItemFactory(project=other, external_id="secret-item", text="other project text")
    answer(other, other_item, users["outsider"], ["ham"], comment="other project comment")
    return {"project": Project.objects.get(pk=project.pk), "item": item, "users": users, "first": first,
            "second": second, "other_item": other_item}


def expected_answers(world: dict[str, Any], comment: str = EVIL) -> list[dict[str, Any]]:
    return [
        {"id": world["first"].pk, "reviewer": "reviewer", "labels": ["spam"], "taxonomy_version": 1,
         "labels_in_current_version": None, "created_at": (T0 + timedelta(minutes=1)).isoformat().replace(
             "+00:00", "Z"), "lead_time_ms": 4200, "comment": comment, "selection_reason": "exploitation",
         "selection_reason_label": "Likely rare class", "model_version": 3, "inclusion_probability": None,
         "suggestion_shown": None, "suggestion_withheld": False, "gold_correct": None},
        {"id": world["second"].pk, "reviewer": "bob", "labels": ["ham"], "taxonomy_version": 2,
         "labels_in_current_version": ["ham"], "created_at": (T0 + timedelta(minutes=2)).isoformat().replace(
             "+00:00", "Z"), "lead_time_ms": None, "comment": "fine\nreally", "selection_reason": "uncertainty",
         "selection_reason_label": "Model uncertainty", "model_version": 3, "inclusion_probability": None,
         "suggestion_shown": None, "suggestion_withheld": False, "gold_correct": None},
    ]


@pytest.mark.parametrize("role", ["policy_lead", "admin"])
def test_api_lists_every_answer_in_order_with_comments_and_the_adjudication(world: dict[str, Any], api_as: Any,
                                                                            role: str) -> None:
    item = world["item"]
    response = api_as(world["users"][role]).get(f"/api/projects/hist/items/{item.pk}/history/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["item"] == {"id": item.pk, "external_id": "x<1>", "text": "free <b>prize</b>", "meta": {},
                            "masked": False, "is_gold": False, "n_done": 0, "n_required": 2}
    assert body["taxonomy_version"] == 2
    assert body["answers"] == expected_answers(world)
    adjudication = body["adjudication"]
    assert (adjudication["state"], adjudication["reason"], adjudication["labels"], adjudication["decided_by"]) == (
        "pending", "disagreement", None, None)
    by_external = api_as(world["users"][role]).get("/api/projects/hist/items/history/", {"external_id": "x<1>"})
    assert by_external.status_code == 200
    assert by_external.json() == body


@pytest.mark.parametrize(("who", "status"), [("reviewer", 403), ("bob", 403), ("ml_engineer", 403),
                                             ("outsider", 404), ("anonymous", 401)])
def test_api_refuses_everyone_else_and_leaks_nothing(world: dict[str, Any], api_as: Any, who: str,
                                                     status: int) -> None:
    before = AuditEvent.objects.count()
    client = api_as(world["users"].get(who))
    for url in (f"/api/projects/hist/items/{world['item'].pk}/history/",
                "/api/projects/hist/items/history/?external_id=x%3C1%3E"):
        response = client.get(url)
        assert response.status_code in ((401, 403) if status == 401 else (status,)), (url, response.content)
        text = response.content.decode()
        assert "window.__pwned" not in text and "fine" not in text and "prize" not in text
    assert AuditEvent.objects.count() == before


def test_api_is_404_for_another_project_s_item_and_unknown_ids(world: dict[str, Any], api_as: Any) -> None:
    lead = api_as(world["users"]["policy_lead"])
    response = lead.get(f"/api/projects/hist/items/{world['other_item'].pk}/history/")
    assert response.status_code == 404
    assert "other project" not in response.content.decode()
    assert lead.get("/api/projects/hist/items/history/?external_id=secret-item").status_code == 404
    assert lead.get("/api/projects/hist/items/999999/history/").status_code == 404
    missing = lead.get("/api/projects/hist/items/history/")
    assert missing.status_code == 400
    assert missing.json()["detail"] == "external_id: required"


def test_api_masks_pii_in_text_and_comments_when_the_project_masks(world: dict[str, Any], api_as: Any) -> None:
    Project.objects.filter(pk=world["project"].pk).update(mask_pii=True, mask_detectors=["email", "phone", "url"])
    body = api_as(world["users"]["policy_lead"]).get(
        f"/api/projects/hist/items/{world['item'].pk}/history/").json()
    assert body["item"]["masked"] is True
    comment = body["answers"][0]["comment"]
    assert "07700 900123" not in comment and "a@b.example" not in comment
    assert "[phone]" in comment and "[email]" in comment


def test_schema_documents_the_history_endpoints(world: dict[str, Any], api_as: Any) -> None:
    schema = api_as(world["users"]["admin"]).get("/api/schema/?format=json").json()
    assert "/api/projects/{slug}/items/{item_id}/history/" in schema["paths"]
    assert "/api/projects/{slug}/items/history/" in schema["paths"]
    answer_schema = schema["components"]["schemas"]["HistoryAnswer"]["properties"]
    assert {"reviewer", "labels", "labels_in_current_version", "taxonomy_version", "created_at", "lead_time_ms",
            "comment", "selection_reason", "selection_reason_label"} <= set(answer_schema)


def _page(user: Any, url: str) -> Any:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(url)


def test_page_shows_every_answer_escaped(world: dict[str, Any]) -> None:
    response = _page(world["users"]["policy_lead"], f"/projects/hist/items/{world['item'].pk}/history/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<script>window.__pwned" not in body and "<img src=x" not in body and "<b>prize</b>" not in body
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in body
    assert "free &lt;b&gt;prize&lt;/b&gt;" in body
    assert 'id="history-external-id">x&lt;1&gt;</span>' in body
    assert "Likely rare class" in body and "Model uncertainty" in body
    assert "not determinable" in body  # the v1 "spam" answer cannot be read after the split
    assert "4200 ms" in body and "fine\nreally" in body
    assert body.index("Likely rare class") < body.index("Model uncertainty")  # oldest first
    assert "<strong>pending</strong>" in body


def test_page_lookup_by_external_id_and_links_from_the_adjudication_queue(world: dict[str, Any]) -> None:
    lead = world["users"]["policy_lead"]
    url = f"/projects/hist/items/{world['item'].pk}/history/"
    response = _page(lead, "/projects/hist/items/history/?external_id=x%3C1%3E")
    assert (response.status_code, response["Location"]) == (302, url)
    missing = _page(lead, "/projects/hist/items/history/?external_id=secret-item")
    assert (missing.status_code, missing["Location"]) == (302, "/projects/hist/adjudication/")
    queue = _page(lead, "/projects/hist/adjudication/").content.decode()
    assert f'href="{url}"' in queue
    assert 'action="/projects/hist/items/history/"' in queue


@pytest.mark.parametrize(("who", "status"), [("reviewer", 403), ("bob", 403), ("ml_engineer", 403),
                                             ("outsider", 404)])
def test_page_refuses_everyone_else(world: dict[str, Any], who: str, status: int) -> None:
    for url in (f"/projects/hist/items/{world['item'].pk}/history/", "/projects/hist/items/history/?external_id=x"):
        response = _page(world["users"][who], url)
        assert response.status_code == status
        assert "window.__pwned" not in response.content.decode()
    anonymous = _page(None, f"/projects/hist/items/{world['item'].pk}/history/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert _page(world["users"]["policy_lead"],
                 f"/projects/hist/items/{world['other_item'].pk}/history/").status_code == 404


def test_page_says_which_suggestion_was_shown_and_which_withheld(world: dict[str, Any]) -> None:
    from django.test import Client

    from labeling.models import Lease

    first, second = world["first"], world["second"]
    Annotation.objects.filter(pk=first.pk).update(suggestion_shown={"label": "spam", "confidence": 0.875})
    lease = Lease.objects.create(project=world["project"], item=world["item"], reviewer=world["users"]["bob"],
                                 state=Lease.State.SUBMITTED, expires_at=T0, selection_reason="uncertainty",
                                 suggestion={"label": "ham", "confidence": 0.6}, suggestion_hidden=True)
    Annotation.objects.filter(pk=second.pk).update(lease=lease)
    client = Client()
    client.force_login(world["users"]["policy_lead"])
    page = client.get(f"/projects/hist/items/{world['item'].pk}/history/").content.decode()
    cells = [part.split("</td>")[0].strip() for part in page.split('<td class="history-suggestion">')[1:]]
    assert cells == ['spam <span class="muted small">0.88</span>', '<span class="muted">withheld</span>']
