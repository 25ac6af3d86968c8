"""PII masking for reviewers, its settings, and the audited reveal (labeling/services/privacy.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache import cache

from labeling.models import AuditEvent, Item, Project
from labeling.services.adjudication import adjudication_open
from labeling.services.annotations import annotation_submit
from labeling.services.privacy import DETECTORS, Masker, _compiled, project_privacy_update
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

PII_TEXT = ("Mail jane.doe+x@example.co.uk or call +44 20 7946 0958, see https://evil.example/p?q=1 "
            "(order 2024-01-31, ref AB-123456)")
MASKED_TEXT = "Mail [email] or call [phone], see [url] (order 2024-01-31, ref [order_ref])"
PATTERNS = [{"name": "order_ref", "pattern": r"\bAB-\d{6}\b"}]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    cache.clear()


def masker(*detectors: str, patterns: tuple[tuple[str, str], ...] = ()) -> Masker:
    return Masker(_compiled(detectors or tuple(DETECTORS), patterns))


def masking_on(project: Project) -> Project:
    return project_privacy_update(actor=None, project=project, mask_pii=True,
                                  mask_detectors=["email", "phone", "url"], mask_patterns=PATTERNS)


# --- the masker ---------------------------------------------------------------------------------------------------


def test_masker_replaces_each_kind_and_leaves_dates_alone() -> None:
    rules = masker(patterns=(("order_ref", r"\bAB-\d{6}\b"),))
    assert rules.text(PII_TEXT) == MASKED_TEXT
    assert rules.text("no pii here, 3 apples on 31.01.2024") == "no pii here, 3 apples on 31.01.2024"
    assert rules.text("tel: (555) 123-4567!") == "tel: [phone]!"
    assert rules.text("www.example.org/a and x@y.io") == "[url] and [email]"


def test_overlapping_matches_become_one_token_and_offsets_survive_unicode() -> None:
    # The URL contains an e-mail address and digits: one token for the union of the spans.
    rules = masker()
    assert rules.text("é ü → http://a.example/u/bob@x.org/5551234567 ←") == "é ü → [url] ←"
    assert rules.text("«jürgen@beispiel.de» 😀 +49 30 1234567") == "«[email]» 😀 [phone]"


def test_meta_strings_and_keys_are_masked_at_any_depth_and_numbers_kept() -> None:
    rules = masker("email")
    meta = {"from": "a@b.com", "n": 5, "thread": [{"to": "c@d.org", "ok": True}], "a@b.com": None}
    # Keys too (issue 16): an address as a key was served unmasked beside masked values.
    assert rules.value(meta) == {"from": "[email]", "n": 5, "thread": [{"to": "[email]", "ok": True}], "[email]": None}


def test_catastrophic_patterns_run_in_linear_time() -> None:
    # (a+)+$ takes exponential time under backtracking engines; RE2 has no backtracking.
    rules = masker(patterns=(("bomb", r"(a+)+$"), ("bomb2", r"(x|x)*y")))
    text = "a" * 200_000 + "!" + "x" * 200_000
    start = time.perf_counter()
    assert rules.text(text) == text
    elapsed = time.perf_counter() - start
    big = ("lorem ipsum a@b.com +1 555 123 4567 https://x.example/ " * 20_000)[:1_000_000]
    start = time.perf_counter()
    masked = masker(patterns=(("bomb", r"(a+)+$"),)).text(big)
    big_elapsed = time.perf_counter() - start
    print(f"pathological 400k chars: {elapsed * 1000:.1f} ms; 1 MB text, every detector: {big_elapsed * 1000:.1f} ms")
    assert "@" not in masked and "https" not in masked
    assert elapsed < 2.0 and big_elapsed < 5.0  # generous for a loaded 2-core box; backtracking would never end


# --- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"mask_patterns": [{"name": "back", "pattern": r"(a)\1"}]}, "mask_patterns[0]", "not a valid RE2 pattern"),
    ({"mask_patterns": [{"name": "look", "pattern": r"(?=a)b"}]}, "mask_patterns[0]", "look-around"),
    ({"mask_patterns": [{"name": "huge", "pattern": r"((a{100}){100}){100}"}]}, "mask_patterns[0]", "RE2"),
    ({"mask_patterns": [{"name": "empty", "pattern": r"a*"}]}, "mask_patterns[0]", "empty string"),
    ({"mask_patterns": [{"name": "email", "pattern": r"x"}]}, "mask_patterns[0]", "already used"),
    ({"mask_patterns": [{"name": "Bad Name", "pattern": r"x"}]}, "mask_patterns[0]", "lower-case"),
    ({"mask_patterns": [{"name": f"p{i}", "pattern": "x"} for i in range(21)]}, "mask_patterns", "20"),
    ({"mask_detectors": ["email", "ssn"]}, "mask_detectors", "ssn"),
    ({"retention_days": 0}, "retention_days", "greater than or equal to 1"),
])
def test_bad_settings_are_refused_and_nothing_changes(cast: dict[str, Any], api_as: Any, body: dict[str, Any],
                                                      field: str, words: str) -> None:
    project: Project = cast["project"]
    audit_before = AuditEvent.objects.count()
    response = api_as(cast["users"]["admin"]).patch("/api/projects/sms/privacy", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["field"].startswith(field)
    assert words in response.json()["detail"]
    project.refresh_from_db()
    assert (project.mask_pii, project.mask_detectors, project.mask_patterns, project.retention_days) == (
        False, [], [], None)
    assert AuditEvent.objects.count() == audit_before


def test_settings_round_trip_and_are_audited(cast: dict[str, Any], api_as: Any) -> None:
    client = api_as(cast["users"]["admin"])
    body = {"mask_pii": True, "mask_detectors": ["url", "email"], "mask_patterns": PATTERNS, "retention_days": 30}
    response = client.patch("/api/projects/sms/privacy", body, format="json")
    assert response.status_code == 200, response.content
    expected = {"mask_pii": True, "mask_detectors": ["url", "email"], "mask_patterns": PATTERNS, "retention_days": 30}
    assert response.json() == expected
    assert client.get("/api/projects/sms/privacy").json() == expected
    event = AuditEvent.objects.filter(action="project.privacy_update").get()
    assert event.data["before"]["mask_pii"] is False and event.data["after"] == expected
    assert event.actor_id == cast["users"]["admin"].pk
    denied = api_as(cast["users"]["policy_lead"]).patch("/api/projects/sms/privacy", {"mask_pii": False},
                                                        format="json")
    assert denied.status_code == 403
    assert Project.objects.get(pk=cast["project"].pk).mask_pii is True


# --- where reviewers see items -------------------------------------------------------------------------------------


def test_queue_next_and_undo_show_masked_text_and_storage_is_untouched(cast: dict[str, Any], api_as: Any) -> None:
    project = masking_on(cast["project"])
    item = ItemFactory(project=project, external_id="pii-1", text=PII_TEXT,
                       meta={"sender": "jane.doe+x@example.co.uk", "n": 3})
    client = api_as(cast["users"]["reviewer"])
    body = client.post("/api/projects/sms/queue/next").json()
    assert body["item"] == {"id": item.pk, "external_id": "pii-1", "text": MASKED_TEXT,
                            "meta": {"sender": "[email]", "n": 3}, "masked": True, "image": None}
    done = client.post(f"/api/leases/{body['lease']['id']}/submit", {"labels": ["ham"]}, format="json")
    assert done.status_code == 201
    undone = client.post(f"/api/leases/{body['lease']['id']}/undo")
    assert undone.status_code == 200
    assert undone.json()["item"]["text"] == MASKED_TEXT
    stored = Item.objects.get(pk=item.pk)
    assert (stored.text, stored.meta) == (PII_TEXT, {"sender": "jane.doe+x@example.co.uk", "n": 3})


def test_the_next_item_returned_by_a_submit_is_masked_too(cast: dict[str, Any], api_as: Any) -> None:
    project = masking_on(cast["project"])
    ItemFactory(project=project, external_id="first", text="hello a@b.com")
    ItemFactory(project=project, external_id="second", text="hello c@d.com")
    client = api_as(cast["users"]["reviewer"])
    body = client.post("/api/projects/sms/queue/next").json()
    done = client.post(f"/api/leases/{body['lease']['id']}/submit", {"labels": ["ham"], "next": True}, format="json")
    assert done.status_code == 201, done.content
    following = done.json()["next"]["item"]
    assert (following["text"], following["masked"]) == ("hello [email]", True)


def test_unmasked_projects_answer_exactly_as_before(cast: dict[str, Any], api_as: Any) -> None:
    item = ItemFactory(project=cast["project"], external_id="plain", text=PII_TEXT, meta={})
    body = api_as(cast["users"]["reviewer"]).post("/api/projects/sms/queue/next").json()
    assert body["item"] == {"id": item.pk, "external_id": "plain", "text": PII_TEXT, "meta": {}, "image": None}


def test_adjudication_list_detail_and_page_mask_text_and_comments(cast: dict[str, Any], api_as: Any) -> None:
    project = masking_on(cast["project"])
    item = ItemFactory(project=project, external_id="adj-1", text=PII_TEXT, meta={"from": "a@b.com"})
    reviewer = cast["users"]["reviewer"]
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"], comment="he wrote from a@b.com")
    adjudication, _ = adjudication_open(actor=cast["users"]["policy_lead"], project=project, external_id="adj-1")
    client = api_as(cast["users"]["policy_lead"])
    listed = client.get("/api/projects/sms/adjudications/").json()["results"][0]
    detail = client.get(f"/api/projects/sms/adjudications/{adjudication.pk}/").json()
    for shown in (listed, detail):
        assert shown["item"] == {"id": item.pk, "external_id": "adj-1", "text": MASKED_TEXT,
                                 "meta": {"from": "[email]"}, "masked": True}
        assert [a["comment"] for a in shown["answers"]] == ["he wrote from [email]"]
    client.force_login(cast["users"]["policy_lead"])
    page = client.get("/projects/sms/adjudication/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Mail [email] or call [phone]" in html
    assert "jane.doe" not in html and "7946" not in html and "a@b.com" not in html


# --- reveal --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["policy_lead", "admin"])
def test_reveal_returns_the_stored_text_and_writes_an_audit_row(cast: dict[str, Any], api_as: Any,
                                                                role: str) -> None:
    project = masking_on(cast["project"])
    item = ItemFactory(project=project, external_id="rev-1", text=PII_TEXT, meta={"from": "a@b.com"})
    response = api_as(cast["users"][role]).post(f"/api/projects/sms/items/{item.pk}/reveal",
                                                {"reason": "escalation #12"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"id": item.pk, "external_id": "rev-1", "text": PII_TEXT, "meta": {"from": "a@b.com"}}
    event = AuditEvent.objects.get(action="item.reveal")
    assert (event.actor_id, event.project_id, event.object_id) == (cast["users"][role].pk, project.pk, str(item.pk))
    assert event.data == {"item_id": item.pk, "reason": "escalation #12"}
    assert PII_TEXT not in str(event.data)


@pytest.mark.parametrize(("who", "status"), [("reviewer", 403), ("ml_engineer", 403), ("outsider", 404),
                                             ("anonymous", 401)])
def test_reveal_is_refused_to_everyone_else_and_leaves_no_trace(cast: dict[str, Any], api_as: Any, who: str,
                                                                status: int) -> None:
    project = masking_on(cast["project"])
    item = ItemFactory(project=project, external_id="rev-2", text=PII_TEXT)
    before = AuditEvent.objects.count()
    response = api_as(cast["users"][who]).post(f"/api/projects/sms/items/{item.pk}/reveal", {}, format="json")
    assert response.status_code == status
    assert "jane.doe" not in response.content.decode()
    assert AuditEvent.objects.count() == before


def test_reveal_of_another_projects_item_is_not_found(cast: dict[str, Any], api_as: Any) -> None:
    foreign = ItemFactory(project=cast["other_project"], external_id="theirs", text="secret a@b.com")
    before = AuditEvent.objects.count()
    response = api_as(cast["users"]["admin"]).post(f"/api/projects/sms/items/{foreign.pk}/reveal", {},
                                                   format="json")
    assert response.status_code == 404
    assert "secret" not in response.content.decode()
    assert AuditEvent.objects.count() == before


def test_schema_documents_the_privacy_endpoints(api_as: Any, cast: dict[str, Any]) -> None:
    schema = api_as(cast["users"]["admin"]).get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert "patch" in paths["/api/projects/{slug}/privacy"]
    assert "post" in paths["/api/projects/{slug}/items/{item_id}/reveal"]
    assert "post" in paths["/api/projects/{slug}/items/delete"]
    assert "masked" in schema["components"]["schemas"]["QueueItem"]["properties"]
