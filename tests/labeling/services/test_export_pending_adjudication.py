"""An export never claims agreement that is not there (issue 14).

Reproduced: two reviewers, a taxonomy publish between their answers (the first answer cannot be read in the new
version), so the item went to a lead (pending adjudication), and the export still said ``labels=["ham"]``,
``label_source="majority"``, ``n_annotators=2``, ``agreement=1.0``. Now a pending adjudication shows as
``label_source="pending_adjudication"`` with no hard label and no agreement, and agreement is always over the
same ``n_annotators`` answers (an answer unreadable in the target version counts as not agreeing). Both
aggregation paths (PostgreSQL's one query and the Python merge-join used for ``raw`` and SQLite) are checked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from labeling.models import Adjudication, Annotation, Item, Project, SelectionReason
from labeling.services.adjudication import adjudication_decide, adjudication_sync_for_item
from labeling.services.exports import export_card, export_params_parse, export_prepare, export_stream
from labeling.services.exports import judge as export_judge
from labeling.services.exports import read as export_read
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

V1: dict[str, Any] = {"name": "SMS", "multi_label": False,
                      "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"}]}
# v2 splits spam: a v1 "spam" answer cannot be read in v2 (undeterminable), a v1 "ham" is carried.
V2: dict[str, Any] = {"name": "SMS", "multi_label": False,
                      "labels": [{"key": "ham", "name": "Ham"},
                                 {"key": "spam", "name": "Spam", "children": [{"key": "spam/scam", "name": "Scam"},
                                                                             {"key": "spam/promo", "name": "Promo"}]}]}


def answer(project: Project, item: Item, reviewer: Any, labels: list[str], comment: str = "") -> Annotation:
    version = Project.objects.get(pk=project.pk).current_taxonomy_version
    assert version is not None
    annotation = Annotation.objects.create(project=project, item=item, reviewer=reviewer, taxonomy_version=version,
                                           labels=labels, comment=comment,
                                           selection_reason=SelectionReason.UNCERTAINTY)
    Item.objects.filter(pk=item.pk).update(n_done=item.n_done + 1)
    item.n_done += 1
    return annotation


@pytest.fixture
def world(db: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    project = ProjectFactory(slug="pend", taxonomy=V1, overlap=2)
    ann = member(project, username="ann", role="reviewer")
    bob = member(project, username="bob", role="reviewer")
    lead = member(project, username="lead", role="policy_lead")
    item = ItemFactory(project=project, external_id="x1", text="hello there")
    answer(project, item, ann, ["spam"], comment="looks like <b>spam</b> to me")
    taxonomy_draft_save(actor=lead, project=project, document=V2, migrations=[
        {"kind": "split", "sources": ["spam"], "targets": ["spam/scam", "spam/promo"]}])
    taxonomy_draft_publish(actor=lead, project=project, changelog="spam split by kind")
    item.refresh_from_db()
    answer(project, item, bob, ["ham"])
    adjudication = adjudication_sync_for_item(item_id=item.pk)
    assert adjudication is not None and adjudication.state == "pending"
    return {"project": Project.objects.get(pk=project.pk), "item": item, "lead": lead, "ann": ann, "bob": bob,
            "adjudication": adjudication}


def rows(project: Project, **params: Any) -> list[dict[str, Any]]:
    prepared = export_prepare(project=project, params=export_params_parse({"format": "jsonl", **params}),
                              actor=None)
    return [json.loads(line) for line in b"".join(export_stream(prepared)).splitlines()]


def python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The aggregates are read where they are judged (exports/judge.py), so that is where the SQL path is swapped out.
    monkeypatch.setattr(export_judge, "_aggregates",
                        lambda prepared, *, light, reviewers=False: export_read._python_aggregates(
                            prepared, light=light))


PENDING_ROW = {"labels": [], "label_source": "pending_adjudication", "soft_labels": {"ham": 1.0, "spam": 0.0,
               "spam/scam": 0.0, "spam/promo": 0.0}, "n_annotators": 2, "agreement": None,
               "annotation_taxonomy_versions": [1, 2], "n_mapped": 0, "n_unmappable": 1}
DECIDED_ROW = {**PENDING_ROW, "labels": ["spam/promo"], "label_source": "adjudication", "agreement": 0.0}
FIELDS = tuple(PENDING_ROW)


@pytest.mark.parametrize("path", ["sql", "python"])
def test_a_pending_adjudication_is_not_exported_as_a_majority(world: dict[str, Any], path: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        python_path(monkeypatch)
    (row,) = rows(world["project"])
    assert {k: row[k] for k in FIELDS} == PENDING_ROW
    assert row["external_id"] == "x1"


@pytest.mark.parametrize("path", ["sql", "python"])
def test_deciding_it_exports_the_lead_s_answer_with_agreement_over_both_answers(
        world: dict[str, Any], path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    adjudication_decide(actor=world["lead"], project=world["project"], adjudication_id=world["adjudication"].pk,
                        labels=["spam/promo"])
    if path == "python":
        python_path(monkeypatch)
    (row,) = rows(world["project"])
    assert {k: row[k] for k in FIELDS} == DECIDED_ROW


@pytest.mark.parametrize("path", ["sql", "python"])
def test_agreement_counts_an_unreadable_answer_as_not_agreeing(world: dict[str, Any], path: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the adjudication the same answers are a majority of one readable answer out of two.
    Adjudication.objects.all().delete()
    if path == "python":
        python_path(monkeypatch)
    (row,) = rows(world["project"])
    assert {k: row[k] for k in FIELDS} == {**PENDING_ROW, "labels": ["ham"], "label_source": "majority",
                                           "agreement": 0.5}
    assert rows(world["project"], min_agreement="0.6") == []


@pytest.mark.parametrize("path", ["sql", "python"])
def test_pending_rows_have_no_agreement_so_min_agreement_drops_them_and_the_card_counts_them(
        world: dict[str, Any], path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        python_path(monkeypatch)
    assert rows(world["project"], min_agreement="0") == []
    prepared = export_prepare(project=world["project"], params=export_params_parse({"format": "jsonl"}), actor=None)
    b"".join(export_stream(prepared))
    card = export_card(prepared)
    assert card["label_sources"] == {"pending_adjudication": 1}
    assert card["agreement"]["rows_with_agreement"] == 0
    assert "pending_adjudication" in card["label_source_definitions"]
