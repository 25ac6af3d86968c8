"""The match-bank endpoints (labeling/api/views_banks.py): status codes, error bodies and the schema."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from labeling.models import AuditEvent, BankEntry, Item, MatchBank
from learning.services.clusters import project_cluster_items
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items

pytestmark = pytest.mark.django_db

SCAM = "URGENT! You have won a 2000 pound prize. Call 09061701461 now to claim, code KL341, valid 12 hours"


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_create_confirm_export_and_import_over_http() -> None:
    source = ProjectFactory(slug="api-bank-src", embedder="hashing", overlap=1)
    lead = _client(member(source, username="lead", role="policy_lead"))
    scam = add_items(source, [SCAM, "hello"])[0]
    project_cluster_items(project_id=source.pk)

    created = lead.post("/api/projects/api-bank-src/banks/", {"name": "Scams", "label": "bad"}, format="json")
    assert created.status_code == 201
    bank = created.json()
    assert {k: bank[k] for k in ("name", "label", "polarity", "threshold", "entries_confirmed")} == {
        "name": "Scams", "label": "bad", "polarity": "violating", "threshold": 0.8, "entries_confirmed": 0}
    again = lead.post("/api/projects/api-bank-src/banks/", {"name": "Scams", "label": "bad"}, format="json")
    assert (again.status_code, again.json()["detail"]) == (
        409, "project 'api-bank-src' already has a bank named 'Scams'")
    wrong = lead.post("/api/projects/api-bank-src/banks/", {"name": "X", "label": "nope"}, format="json")
    assert (wrong.status_code, wrong.json()["detail"]) == (
        400, "label 'nope' is not in the project's current taxonomy")

    confirmed = lead.post(f"/api/projects/api-bank-src/banks/{bank['id']}/confirm", {"items": [scam.pk]},
                          format="json")
    assert confirmed.status_code == 200 and confirmed.json()["signatures"] == 1
    detail = lead.get(f"/api/projects/api-bank-src/banks/{bank['id']}/").json()
    assert [(e["kind"], e["status"], e["source_item"], e["confirmed_by"]) for e in detail["entries"]] == [
        ("item", "confirmed", scam.pk, "lead")]
    document = lead.get(f"/api/projects/api-bank-src/banks/{bank['id']}/export").json()
    assert "URGENT" not in str(document) and len(document["entries"]) == 1

    target = ProjectFactory(slug="api-bank-dst", embedder="hashing", overlap=1)
    other_lead = _client(member(target, username="lead2", role="policy_lead"))
    add_items(target, [SCAM.replace("09061701461", "0800")], prefix="dst")
    imported = other_lead.post("/api/projects/api-bank-dst/banks/import?name=Shared", document, format="json")
    assert (imported.status_code, imported.json()["name"], imported.json()["entries_confirmed"]) == (201, "Shared", 1)
    project_cluster_items(project_id=target.pk)
    assert Item.objects.get(project=target).boost == 50


def test_a_bad_document_over_http_is_a_400_naming_the_problem_and_writes_nothing() -> None:
    project = ProjectFactory(slug="api-bank-bad", embedder="hashing")
    lead = _client(member(project, username="lead", role="policy_lead"))
    before = (MatchBank.objects.count(), BankEntry.objects.count(), AuditEvent.objects.count())
    response = lead.post("/api/projects/api-bank-bad/banks/import", {"format": "sift-match-bank", "version": 2},
                         format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "not a bank document: expected format 'sift-match-bank' version 1"
    assert (MatchBank.objects.count(), BankEntry.objects.count(), AuditEvent.objects.count()) == before


def test_the_schema_documents_every_bank_operation() -> None:
    project = ProjectFactory(slug="api-bank-schema")
    schema = _client(member(project, username="lead", role="policy_lead")).get(
        "/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for operation in ("banks_list", "banks_create", "banks_detail", "banks_confirm", "banks_entry_deconfirm",
                      "banks_export", "banks_import"):
        assert f"operationId: {operation}" in schema or f'"operationId": "{operation}"' in schema
    assert "bank_matches" in schema
