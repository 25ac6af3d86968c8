"""labeling/services/adjudication.py: what opens an adjudication, deciding, auditing; and gold + adjudication
end to end through the real queue, submit, stats and export."""

from __future__ import annotations

import hashlib
import inspect
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from labeling.models import Adjudication, Annotation, AuditEvent, Item, Lease, Project, SelectionReason
from labeling.selectors.quality import gold_alerts
from labeling.services import annotations as annotations_service
from labeling.services.adjudication import (
    adjudication_decide,
    adjudication_open,
    adjudication_reason,
    adjudication_sync_for_item,
)
from labeling.services.annotations import annotation_submit
from labeling.services.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labeling.services.privacy import external_id_digest
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

POLICY: dict[str, Any] = {
    "name": "Policy",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "OK"},
        {"key": "spam", "name": "Spam", "severity": 2},
        {"key": "threat", "name": "Threat", "severity": 5},
    ],
}


@pytest.fixture(autouse=True)
def retrains(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Stand-in for learning.scheduling.request_retrain that, like the real one, acts only on commit (no broker)."""
    requested: list[int] = []

    def fake(*, project_id: int) -> None:
        transaction.on_commit(lambda: requested.append(project_id))

    monkeypatch.setattr("learning.scheduling.request_retrain", fake)
    return requested


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="adj", taxonomy=POLICY, overlap=2)
    return {
        "project": project,
        "ann": member(project, username="ann", role="reviewer"),
        "bob": member(project, username="bob", role="reviewer"),
        "lead": member(project, username="lead", role="policy_lead"),
        "eng": member(project, username="eng", role="ml_engineer"),
    }


def answer(project: Project, item: Item, reviewer: Any, labels: list[str], comment: str = "") -> Annotation:
    """An answer as the submit service leaves it (annotation row and n_done), without going through a lease."""
    version = project.current_taxonomy_version
    assert version is not None
    annotation = Annotation.objects.create(
        project=project, item=item, reviewer=reviewer, taxonomy_version=version,
        labels=labels, comment=comment, selection_reason=SelectionReason.UNCERTAINTY)
    Item.objects.filter(pk=item.pk).update(n_done=item.n_done + 1)
    item.n_done += 1
    return annotation


def test_reason_rule() -> None:
    severity = {(1, "threat"): 5, (1, "spam"): 2}
    assert adjudication_reason(answers=[(1, ("ok",)), (1, ("spam",))], severity=severity, threshold=4) == "disagreement"
    assert adjudication_reason(answers=[(1, ("threat",)), (1, ("threat",))], severity=severity, threshold=4) == "severe"
    assert adjudication_reason(answers=[(1, ("spam",)), (1, ("spam",))], severity=severity, threshold=4) is None
    assert adjudication_reason(answers=[(1, ("spam",))], severity=severity, threshold=2) == "severe"
    # Same keys given in different taxonomy versions are different answers.
    assert adjudication_reason(answers=[(1, ("ok",)), (2, ("ok",))], severity={}, threshold=4) == "disagreement"


def test_disagreement_opens_one_pending_adjudication_and_audits_it(world: dict[str, Any]) -> None:
    project = world["project"]
    item = ItemFactory(project=project, external_id="x1")
    answer(project, item, world["ann"], ["ok"])
    assert adjudication_sync_for_item(item_id=item.pk) is None  # one of two answers: not complete yet
    answer(project, item, world["bob"], ["spam"])
    adjudication = adjudication_sync_for_item(item_id=item.pk)
    assert adjudication is not None
    assert (adjudication.state, adjudication.reason, adjudication.labels) == ("pending", "disagreement", None)
    again = adjudication_sync_for_item(item_id=item.pk)
    assert again is not None and again.pk == adjudication.pk
    assert Adjudication.objects.count() == 1
    events = list(AuditEvent.objects.filter(action="adjudication.open").values_list("object_id", "data"))
    assert events == [(str(adjudication.pk), {
        "item_id": item.pk, "external_id_sha256": external_id_digest(project, "x1"), "reason": "disagreement",
        "answers": [{"reviewer_id": world["ann"].pk, "labels": ["ok"]}, {"reviewer_id": world["bob"].pk,
                                                                          "labels": ["spam"]}]})]


def test_agreement_is_left_alone_unless_severe(world: dict[str, Any]) -> None:
    project = world["project"]
    calm, severe = ItemFactory(project=project), ItemFactory(project=project)
    for reviewer in (world["ann"], world["bob"]):
        answer(project, calm, reviewer, ["spam"])
        answer(project, severe, reviewer, ["threat"])
    assert adjudication_sync_for_item(item_id=calm.pk) is None
    opened = adjudication_sync_for_item(item_id=severe.pk)
    assert opened is not None and opened.reason == "severe"
    assert list(Adjudication.objects.values_list("item_id", flat=True)) == [severe.pk]


def test_severity_threshold_comes_from_settings(world: dict[str, Any], settings: Any) -> None:
    settings.SIFT_ADJUDICATION_SEVERITY = 2
    project = world["project"]
    item = ItemFactory(project=project)
    for reviewer in (world["ann"], world["bob"]):
        answer(project, item, reviewer, ["spam"])
    opened = adjudication_sync_for_item(item_id=item.pk)
    assert opened is not None and opened.reason == "severe"


def test_gold_items_never_go_to_a_lead(world: dict[str, Any]) -> None:
    project = world["project"]
    gold = ItemFactory(project=project, is_gold=True, gold_labels=["ok"])
    answer(project, gold, world["ann"], ["ok"])
    answer(project, gold, world["bob"], ["threat"])
    assert adjudication_sync_for_item(item_id=gold.pk) is None
    with pytest.raises(ValidationFailed, match="gold item"):
        adjudication_open(actor=world["lead"], project=project, external_id=gold.external_id)
    assert Adjudication.objects.count() == 0


def _pending(world: dict[str, Any]) -> Adjudication:
    project = world["project"]
    item = ItemFactory(project=project, external_id="x9")
    answer(project, item, world["ann"], ["ok"], comment="looks fine")
    answer(project, item, world["bob"], ["spam"], comment="link to a promo")
    adjudication = adjudication_sync_for_item(item_id=item.pk)
    assert adjudication is not None
    return adjudication


def test_lead_decides_and_it_is_audited(world: dict[str, Any], retrains: list[int],
                                        django_capture_on_commit_callbacks: Any) -> None:
    adjudication = _pending(world)
    project = world["project"]
    with django_capture_on_commit_callbacks(execute=True):
        decided = adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk,
                                      labels=["spam"], note="promo with link")
    assert retrains == [project.pk]  # the decision is a training label: a retrain is requested after commit
    decided.refresh_from_db()
    assert (decided.state, decided.labels, decided.note, decided.decided_by_id) == (
        "decided", ["spam"], "promo with link", world["lead"].pk)
    assert decided.taxonomy_version_id == project.current_taxonomy_version_id
    assert decided.decided_at is not None
    event = AuditEvent.objects.get(action="adjudication.decide")
    assert (event.actor_id, event.object_id) == (world["lead"].pk, str(adjudication.pk))
    # The audit row keeps digests, never the external id or the note in the clear (they can carry PII).
    assert event.data == {"item_id": adjudication.item_id, "external_id_sha256": external_id_digest(project, "x9"),
                          "labels": ["spam"], "taxonomy_version": 1, "reason": "disagreement",
                          "note_sha256": hashlib.sha256(b"promo with link").hexdigest(),
                          "previous": {"state": "pending", "labels": None, "note_sha256": "", "decided_by": None}}


def test_deciding_twice_needs_revise(world: dict[str, Any]) -> None:
    adjudication = _pending(world)
    project, lead = world["project"], world["lead"]
    adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["spam"])
    with pytest.raises(Conflict, match="already decided"):
        adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["ok"])
    adjudication.refresh_from_db()
    assert adjudication.labels == ["spam"]
    adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["ok"], revise=True)
    adjudication.refresh_from_db()
    assert adjudication.labels == ["ok"]
    revised = AuditEvent.objects.get(action="adjudication.revise")
    assert revised.data["previous"]["labels"] == ["spam"]


def test_bad_decisions_change_nothing(world: dict[str, Any]) -> None:
    adjudication = _pending(world)
    project = world["project"]
    with pytest.raises(ValidationFailed, match="unknown label 'nope'"):
        adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk, labels=["nope"])
    with pytest.raises(ValidationFailed, match="exactly one label"):
        adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk,
                            labels=["ok", "spam"])
    for role in ("ann", "eng"):  # a reviewer and an ML engineer may not adjudicate
        with pytest.raises(PermissionDenied):
            adjudication_decide(actor=world[role], project=project, adjudication_id=adjudication.pk, labels=["ok"])
    other = ProjectFactory(slug="other-adj", taxonomy=POLICY)
    member(other, username="lead", role="policy_lead")
    with pytest.raises(NotFound):  # the id exists, but in another project: reported as missing
        adjudication_decide(actor=world["lead"], project=other, adjudication_id=adjudication.pk, labels=["ok"])
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.labels, adjudication.decided_by_id) == ("pending", None, None)
    assert not AuditEvent.objects.filter(action__in=["adjudication.decide", "adjudication.revise"]).exists()


def test_manual_open(world: dict[str, Any]) -> None:
    project = world["project"]
    ItemFactory(project=project, external_id="m1")
    adjudication, created = adjudication_open(actor=world["lead"], project=project, external_id="m1",
                                              note="reported by a user")
    assert created and (adjudication.reason, adjudication.note) == ("manual", "reported by a user")
    again, created_again = adjudication_open(actor=world["lead"], project=project, external_id="m1")
    assert (again.pk, created_again) == (adjudication.pk, False)
    with pytest.raises(NotFound, match="no item 'missing'"):
        adjudication_open(actor=world["lead"], project=project, external_id="missing")
    with pytest.raises(PermissionDenied):
        adjudication_open(actor=world["ann"], project=project, external_id="m1")
    assert AuditEvent.objects.filter(action="adjudication.open").count() == 1


# --------------------------------------------------------------------------- end to end


def _submit_wired() -> bool:
    return "adjudication_sync_for_item" in inspect.getsource(annotations_service.annotation_submit)


def test_gold_and_adjudication_end_to_end(api_as: Any) -> None:
    """A careless reviewer is flagged; a disagreement reaches the lead; the lead's answer is what the export holds.

    Everything goes through the real services and endpoints: queue checkout, submit (which scores gold answers),
    the stats API, the adjudication API and the export API.
    """
    project = ProjectFactory(slug="e2e", taxonomy=POLICY, overlap=2, gold_accuracy_threshold=0.8)
    ann = member(project, username="ann", role="reviewer")
    bob = member(project, username="bob", role="reviewer")
    lead = member(project, username="lead", role="policy_lead")
    admin = member(project, username="boss", role="admin")

    # Gold: bob answers each of 6 gold items wrongly, ann rightly. Gold leases are made here the way the queue
    # records them (reason "gold"), so this part does not depend on the checkout's gold wiring.
    for i in range(6):
        gold = ItemFactory(project=project, external_id=f"g{i}", is_gold=True, gold_labels=["spam"], n_required=2)
        for reviewer, labels in ((ann, ["spam"]), (bob, ["ok"])):
            lease = Lease.objects.create(project=project, item=gold, reviewer=reviewer,
                                         expires_at=timezone.now() + timedelta(minutes=5),
                                         selection_reason=SelectionReason.GOLD,
                                         taxonomy_version=project.current_taxonomy_version)
            annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    assert list(Annotation.objects.filter(reviewer=bob).values_list("gold_correct", flat=True)) == [False] * 6
    alerts = gold_alerts(project)
    assert [(a["reviewer"], a["accuracy"], a["n_gold"]) for a in alerts] == [("bob", 0.0, 6)]
    reviewers = api_as(lead).get("/api/projects/e2e/stats/reviewers").json()
    assert {r["reviewer"]: (r["flagged"], r["n_gold"], r["gold_accuracy"]) for r in reviewers["reviewers"]} == {
        "ann": (False, 6, 1.0), "bob": (True, 6, 0.0)}
    assert [a["reviewer"] for a in reviewers["alerts"]] == ["bob"]

    # A disagreement: both reviewers are served the same item by the real queue and answer differently.
    item = ItemFactory(project=project, external_id="sms-1", text="WIN a prize! txt CLAIM", n_required=2)
    for reviewer, labels in ((ann, ["ok"]), (bob, ["spam"])):
        served = queue_checkout_next(project=project, reviewer=reviewer)
        assert served is not None and served.item_id == item.pk
        annotation_submit(lease_id=served.pk, reviewer=reviewer, labels=labels, comment=f"{reviewer.username} says")
    if not _submit_wired():
        # Until annotation_submit calls it (the lead's wiring), call the service exactly as it will be called.
        adjudication_sync_for_item(item_id=item.pk)
    pending = api_as(lead).get("/api/projects/e2e/adjudications/?state=pending").json()
    assert pending["count"] == 1
    (entry,) = pending["results"]
    assert (entry["item"]["external_id"], entry["reason"], entry["state"]) == ("sms-1", "disagreement", "pending")
    assert [(a["reviewer"], a["labels"], a["comment"]) for a in entry["answers"]] == [
        ("ann", ["ok"], "ann says"), ("bob", ["spam"], "bob says")]

    # The lead decides "threat" (neither reviewer's answer): the export must carry exactly that.
    decided = api_as(lead).post(f"/api/projects/e2e/adjudications/{entry['id']}/decide",
                                {"labels": ["threat"], "note": "veiled threat"}, format="json")
    assert decided.status_code == 200, decided.content
    assert (decided.json()["state"], decided.json()["labels"], decided.json()["decided_by"]) == (
        "decided", ["threat"], "lead")
    export = api_as(admin).get("/api/projects/e2e/export?format=jsonl&gold=exclude")
    assert export.status_code == 200, export.content
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert [(r["external_id"], r["labels"], r["label_source"]) for r in rows] == [("sms-1", ["threat"],
                                                                                   "adjudication")]
