"""Every name the core registers or emits is accepted, stored, documented and labelled on the Django side.

The names' one home is learning/core/vocabulary.py. Before it, ``create_project --strategy margin_exploit`` (the
default strategy's own name) was refused, and the ranking's ``exploitation`` and ``random`` reasons were missing
from ``SelectionReason``, the OpenAPI enum and the labelling page's labels.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from labeling.models import AuditEvent, Project, SelectionReason
from labeling.services.items_import import item_content_hash
from learning.core import strategies
from learning.core.embedders import content_hash as embedder_hash
from learning.core.ranking import REASONS
from learning.core.vocabulary import REASON_LABELS, Reason, content_hash
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

CORE_STRATEGIES = ["random", "least_confidence", "margin", "entropy", "margin_exploit"]


def test_core_registry_is_what_this_test_expects() -> None:
    assert list(strategies.STRATEGIES) == CORE_STRATEGIES


def test_every_ranking_reason_is_a_selection_reason_with_the_vocabulary_label() -> None:
    assert set(REASONS) <= set(SelectionReason.values)
    assert SelectionReason.values == [r.value for r in Reason]
    assert dict(SelectionReason.choices) == {r.value: REASON_LABELS[r] for r in Reason}
    assert SelectionReason.EXPLOITATION.label == "Likely rare class"
    assert SelectionReason.RANDOM.label == "Random sample"
    assert SelectionReason.GOLD == "gold"


@pytest.mark.parametrize("strategy", ["default", *CORE_STRATEGIES])
def test_create_project_command_accepts_every_registered_strategy(tmp_path: Path, strategy: str) -> None:
    taxonomy = tmp_path / "taxonomy.json"
    taxonomy.write_text(json.dumps(SMS_TAXONOMY))
    out = io.StringIO()
    call_command("create_project", "--slug", "p", "--name", "P", "--taxonomy", str(taxonomy),
                 "--strategy", strategy, stdout=out)
    assert Project.objects.get(slug="p").strategy == strategy
    assert f"strategy {strategy})" in out.getvalue()


def test_create_project_command_refuses_an_unknown_strategy_and_creates_nothing(tmp_path: Path) -> None:
    taxonomy = tmp_path / "taxonomy.json"
    taxonomy.write_text(json.dumps(SMS_TAXONOMY))
    with pytest.raises(CommandError) as info:
        call_command("create_project", "--slug", "p", "--name", "P", "--taxonomy", str(taxonomy),
                     "--strategy", "bald", stdout=io.StringIO(), stderr=io.StringIO())
    assert str(info.value) == ("strategy: unknown strategy 'bald'; choose one of default, random, "
                               "least_confidence, margin, entropy, margin_exploit")
    assert not Project.objects.filter(slug="p").exists()


@pytest.mark.parametrize("strategy", ["default", *CORE_STRATEGIES])
def test_api_accepts_every_registered_strategy(cast: dict[str, Any], api_as: Any, strategy: str) -> None:
    response = api_as(cast["users"]["admin"]).post(
        "/api/projects/", {"slug": "new", "name": "New", "taxonomy": SMS_TAXONOMY, "strategy": strategy},
        format="json")
    assert response.status_code == 201, response.content
    assert response.json()["strategy"] == strategy
    assert Project.objects.get(slug="new").strategy == strategy


def test_api_refuses_an_unknown_strategy_and_changes_nothing(cast: dict[str, Any], api_as: Any) -> None:
    before = (Project.objects.count(), AuditEvent.objects.count())
    response = api_as(cast["users"]["admin"]).post(
        "/api/projects/", {"slug": "new", "name": "New", "taxonomy": SMS_TAXONOMY, "strategy": "bald"},
        format="json")
    assert response.status_code == 400
    assert "bald" in response.content.decode()
    assert (Project.objects.count(), AuditEvent.objects.count()) == before


def _enum(components: dict[str, Any], prop: dict[str, Any]) -> list[str]:
    """The enum of a schema property, through a $ref or an allOf wrapper (drf-spectacular writes both)."""
    ref = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
    values: list[str] = components[ref.rsplit("/", 1)[1]]["enum"] if ref else prop["enum"]
    return values


def test_schema_enums_list_every_reason_and_every_strategy(cast: dict[str, Any], api_as: Any) -> None:
    schema = api_as(cast["users"]["admin"]).get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    assert _enum(components, components["Selection"]["properties"]["reason"]) == [r.value for r in Reason]
    assert _enum(components, components["ProjectCreateRequest"]["properties"]["strategy"]) == [
        "default", *CORE_STRATEGIES]


def test_label_page_labels_every_reason(cast: dict[str, Any]) -> None:
    client = Client()
    client.force_login(cast["users"]["reviewer"])
    body = client.get("/projects/sms/label/").content.decode()
    match = re.search(r'<script id="label-config" type="application/json">(.*?)</script>', body, re.S)
    assert match is not None
    reasons = json.loads(match.group(1))["reasons"]
    assert reasons == {r.value: REASON_LABELS[r] for r in Reason}
    assert reasons["exploitation"] == "Likely rare class"
    assert reasons["random"] == "Random sample"


def test_one_content_hash_function_and_the_importer_stores_it(cast: dict[str, Any], api_as: Any) -> None:
    assert item_content_hash is content_hash
    assert embedder_hash is content_hash
    body = '{"external_id": "a", "text": "naïve café ☕"}\n'
    response = api_as(cast["users"]["admin"]).post("/api/projects/sms/items/import", body,
                                                   content_type="application/x-ndjson")
    assert response.status_code in (200, 201), response.content
    stored = cast["project"].items.get(external_id="a").content_hash
    assert stored == content_hash("naïve café ☕") == "3d3c2a08f9bcf463b34cb0d849b56b27726240600d33dd255e6fc4730b32cbbb"
    assert ItemFactory(project=cast["project"], text="x").content_hash == content_hash("x")
