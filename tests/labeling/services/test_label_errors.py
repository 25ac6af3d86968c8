"""Suspected label errors end to end: detection at retrain, routing (re-check or adjudication) through the real
queue and submit, settling both ways, the export's ``suspected_error`` flag, audit, and idempotency."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from config.celery import app
from labeling.models import Adjudication, AuditEvent, Item, Project, SelectionReason, SuspectedError
from labeling.services.adjudication import adjudication_decide
from labeling.services.annotations import annotation_submit
from labeling.services.exports import (
    export_card,
    export_card_markdown,
    export_params_parse,
    export_prepare,
    export_stream,
)
from labeling.services.label_errors import label_errors_sync
from labeling.services.queues import queue_checkout_next
from learning.models import ModelVersion
from learning.services import model_version_train
from tests.labeling.services.label_errors_support import noisy_project
from tests.learning.support import annotate


@pytest.fixture(autouse=True)
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, kwargs=None, **_o: calls.append((name, kwargs)))
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    return calls


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    return noisy_project()


def _export(project: Project) -> dict[str, bool]:
    prepared = export_prepare(project=project, params=export_params_parse({"format": "jsonl"}), actor=None)
    rows = [json.loads(line) for line in b"".join(export_stream(prepared)).splitlines()]
    flags = {row["external_id"]: row["suspected_error"] for row in rows}
    card = export_card(prepared)
    assert card["suspected_errors"]["rows"] == sum(flags.values())  # the card counts what the rows flag
    assert f"{sum(flags.values())} rows flagged suspected_error" in export_card_markdown(card)
    return flags


def _suspicions(project: Project) -> list[tuple[str, str, str, str]]:
    return list(SuspectedError.objects.filter(project=project).order_by("item__external_id").values_list(
        "item__external_id", "given_label", "suggested_label", "state"))


def _checkout_and_submit(project: Project, reviewer: Any, labels: list[str]) -> Item:
    lease = queue_checkout_next(project=project, reviewer=reviewer, rng=random.Random(0))
    assert lease is not None
    assert lease.selection_reason == SelectionReason.RELABEL  # served by the boost stage, before the ranking
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    return Item.objects.get(pk=lease.item_id)


def test_wrong_answers_are_suspected_routed_resolved_and_flagged_in_exports(
        world: dict[str, Any], sent: list[tuple[str, Any]], django_capture_on_commit_callbacks: Any) -> None:
    project, items = world["project"], world["items"]
    with django_capture_on_commit_callbacks(execute=True):
        result = model_version_train(project_id=project.pk)
    assert result.outcome == "activated"
    assert _suspicions(project) == [("item-0", "ham", "spam", "new"), ("item-2", "ham", "spam", "new"),
                                    ("item-7", "spam", "ham", "new")]
    metrics = ModelVersion.objects.get(project=project, version=result.version or 0).metrics
    assert metrics["label_errors"] == {"flagged": 3, "new": 3, "labels": 60}
    # Once committed, the human side is asked (by task name) to route them.
    assert [call for call in sent if call[0] == "sift.labeling.label_errors_sync"] == [
        ("sift.labeling.label_errors_sync", {"project_id": project.pk})]
    flags = _export(project)
    assert {k for k, v in flags.items() if v} == {"item-0", "item-2", "item-7"}
    assert len(flags) == 60

    # Routing: the single answers get one more required answer and a boost; the disagreement goes to a lead.
    assert label_errors_sync(project_id=project.pk).routed == {"recheck": 2, "adjudication": 1}
    assert [s[3] for s in _suspicions(project)] == ["recheck", "recheck", "adjudication"]
    assert list(Item.objects.filter(pk__in=[items[0].pk, items[2].pk]).order_by("id")
                .values_list("n_required", "n_done", "boost")) == [(2, 1, 1), (2, 1, 1)]
    adjudication = Adjudication.objects.get(item=items[7])
    assert (adjudication.reason, adjudication.state) == ("suspected_error", "pending")
    routes = AuditEvent.objects.filter(project=project, action="label_error.route").order_by("id")
    assert sorted((e.data["item_id"], e.data["route"], e.data["requeued"]) for e in routes) == [
        (items[0].pk, "recheck", {"n_required": [1, 2], "boost": [0, 1]}),
        (items[2].pk, "recheck", {"n_required": [1, 2], "boost": [0, 1]}),
        (items[7].pk, "adjudication", None)]  # (routed most suspect first; sorted here by item)
    assert {e.data["given_label"] for e in routes} == {"ham", "spam"}
    assert label_errors_sync(project_id=project.pk).routed == {}  # idempotent

    # The re-checks: dan (who never answered these items) is served them first, through the boost stage.
    first = _checkout_and_submit(project, world["dan"], ["ham"])  # agrees with ann: the answer stands
    second = _checkout_and_submit(project, world["dan"], ["spam"])  # disagrees: the submit opens an adjudication
    assert (first.pk, second.pk) == (items[0].pk, items[2].pk)
    assert Adjudication.objects.get(item=second).reason == "disagreement"
    assert label_errors_sync(project_id=project.pk).resolved == {"cleared": 1}
    assert [s[3] for s in _suspicions(project)] == ["cleared", "adjudication", "adjudication"]
    assert {k for k, v in _export(project).items() if v} == {"item-2", "item-7"}

    # The lead decides: item 2 was wrong (confirmed, corrected to spam); item 7's majority stands (cleared).
    lead = world["lead"]
    adjudication_decide(actor=lead, project=project, adjudication_id=Adjudication.objects.get(item=second).pk,
                        labels=["spam"])
    adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["spam"])
    assert label_errors_sync(project_id=project.pk).resolved == {"confirmed": 1, "cleared": 1}
    assert list(SuspectedError.objects.filter(project=project).order_by("item__external_id")
                .values_list("state", "resolved_labels")) == [
        ("cleared", ["ham"]), ("confirmed", ["spam"]), ("cleared", ["spam"])]
    assert not any(_export(project).values())
    resolves = AuditEvent.objects.filter(project=project, action="label_error.resolve").order_by("id")
    assert sorted((e.data["item_id"], e.data["outcome"]) for e in resolves) == [
        (items[0].pk, "cleared"), (items[2].pk, "confirmed"), (items[7].pk, "cleared")]
    assert label_errors_sync(project_id=project.pk).resolved == {}  # idempotent


def test_retraining_twice_suspects_each_answer_once(world: dict[str, Any], settings: Any) -> None:
    settings.SIFT_LABEL_ERRORS_EVERY = 1
    project, items = world["project"], world["items"]
    assert model_version_train(project_id=project.pk).outcome == "activated"
    annotate(items[60], world["ann"], ["spam"])  # a new label: the next retrain really runs
    second = model_version_train(project_id=project.pk)
    assert (second.outcome, second.version) == ("activated", 2)
    assert ModelVersion.objects.get(project=project, version=2).metrics["label_errors"] == {
        "flagged": 3, "new": 0, "labels": 61}
    assert list(SuspectedError.objects.filter(project=project).values_list("model_version", flat=True)) == [1, 1, 1]


def test_detection_waits_for_enough_new_labels(world: dict[str, Any], settings: Any) -> None:
    settings.SIFT_LABEL_ERRORS_EVERY = 2
    project, items = world["project"], world["items"]
    model_version_train(project_id=project.pk)
    annotate(items[60], world["ann"], ["spam"])
    assert model_version_train(project_id=project.pk).version == 2
    assert ModelVersion.objects.get(project=project, version=2).metrics["label_errors"] == {
        "skipped": "1 new label(s) since the last check (checks every 2)", "labels_at_last": 60}
    annotate(items[61], world["ann"], ["ham"])
    assert model_version_train(project_id=project.pk).version == 3
    assert ModelVersion.objects.get(project=project, version=3).metrics["label_errors"] == {
        "flagged": 3, "new": 0, "labels": 62}


def test_too_few_labels_skip_detection(world: dict[str, Any], settings: Any) -> None:
    settings.SIFT_LABEL_ERRORS_MIN_LABELS = 100
    project = world["project"]
    result = model_version_train(project_id=project.pk)
    assert ModelVersion.objects.get(project=project, version=result.version or 0).metrics["label_errors"] == {
        "flagged": 0, "new": 0}
    assert not SuspectedError.objects.filter(project=project).exists()


def test_the_sync_task_twice_routes_once(world: dict[str, Any]) -> None:
    from labeling.tasks import label_errors_sync as task

    project = world["project"]
    model_version_train(project_id=project.pk)
    assert task(project_id=project.pk, unknown_kwarg=1) == {"routed": {"recheck": 2, "adjudication": 1},
                                                            "resolved": {}}
    assert task(project_id=project.pk) == {"routed": {}, "resolved": {}}
    assert AuditEvent.objects.filter(project=project, action="label_error.route").count() == 3
    assert Item.objects.get(pk=world["items"][0].pk).n_required == 2  # not 3: one more answer, once


def test_a_failing_detector_never_fails_the_model(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("no room for folds")

    monkeypatch.setattr("learning.services.label_errors.out_of_fold_proba", broken)
    result = model_version_train(project_id=world["project"].pk)
    version = ModelVersion.objects.get(project=world["project"], version=result.version or 0)
    assert (result.outcome, version.status) == ("activated", "active")
    assert version.metrics["label_errors"] == {"error": "MemoryError: no room for folds"}
    assert not SuspectedError.objects.exists()
