"""annotation_submit, lease_skip, lease_renew, annotation_undo: outcomes, refusals, and "nothing changed"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import transaction
from django.db.models import F

from labeling.models import Annotation, AuditEvent, Item, Lease, Project, RankingEntry, RankingRow
from labeling.services import queues
from labeling.services.annotations import annotation_submit, annotation_undo, lease_renew, lease_skip
from labeling.services.errors import Conflict, PermissionDenied, ValidationFailed
from labeling.services.queues import queue_checkout_next
from labeling.services.taxonomy import taxonomy_publish_document
from labeling.services.taxonomy_io import taxonomy_parse
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

FIXED_NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

HIERARCHY = {
    "name": "Abuse", "multi_label": False,
    "labels": [
        {"key": "ok", "name": "OK"},
        {"key": "hate", "name": "Hate", "children": [{"key": "hate/slur", "name": "Slur"},
                                                     {"key": "hate/threat", "name": "Threat"}]},
        {"key": "old", "name": "Old", "deprecated": True},
    ],
}
MULTI = {"name": "Multi", "multi_label": True,
         "labels": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}, {"key": "c", "name": "C"}]}


@pytest.fixture(autouse=True)
def retrains(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Stand-in for learning.scheduling.request_retrain that, like the real one, acts only on commit."""
    committed: list[int] = []

    def fake(*, project_id: int) -> None:
        transaction.on_commit(lambda: committed.append(project_id))

    monkeypatch.setattr("learning.scheduling.request_retrain", fake)
    cache.clear()
    return committed


def setup(taxonomy: dict[str, Any] | None = None, *, overlap: int = 1, n_reviewers: int = 2,
          **item_fields: Any) -> tuple[Project, Item, list[Any]]:
    project = ProjectFactory(overlap=overlap, **({"taxonomy": taxonomy} if taxonomy else {}))
    target: Item = ItemFactory(project=project, external_id="target", **{"random_key": 0.1, **item_fields})
    people = [member(project, username=f"{project.slug}-r{i}", role="reviewer") for i in range(n_reviewers)]
    return project, target, people


def checkout(project: Project, reviewer: Any) -> Lease:
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    return lease


def snapshot(item: Item) -> tuple[Any, ...]:
    """Everything a refused request must leave untouched."""
    return (
        Item.objects.get(pk=item.pk).n_done,
        list(Lease.objects.order_by("id").values_list("id", "state", "expires_at", "closed_at", "renewals")),
        list(Annotation.objects.order_by("id").values_list("id", "labels")),
        AuditEvent.objects.count(),
    )


# --- submit -----------------------------------------------------------------------------------------------------


def test_submit_records_the_annotation_closes_the_lease_and_counts_it(retrains: list[int],
                                                                       django_capture_on_commit_callbacks: Any) -> None:
    project, target, (reviewer, _) = setup()
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=3, start_rank=0, rows=[
        RankingRow(item_id=target.pk, score=0.7, reason="uncertainty", inclusion_probability=0.5,
                   suggested_label="bad", suggested_confidence=0.9)])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=3)
    project.refresh_from_db()
    lease = checkout(project, reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        annotation, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"],
                                                idempotency_key="k1", lead_time_ms=1234, comment="fine")
    assert created is True
    stored = Annotation.objects.get(pk=annotation.pk)
    assert (stored.item_id, stored.reviewer_id, stored.lease_id, stored.labels, stored.taxonomy_version_id,
            stored.lead_time_ms, stored.comment, stored.idempotency_key) == (
        target.pk, reviewer.pk, lease.pk, ["ok"], project.current_taxonomy_version_id, 1234, "fine", "k1")
    assert (stored.selection_reason, stored.selection_score, stored.inclusion_probability, stored.model_version,
            stored.suggestion_shown, stored.gold_correct) == (
        "uncertainty", 0.7, 0.5, 3, {"label": "bad", "confidence": 0.9}, None)
    lease.refresh_from_db()
    assert (lease.state, lease.closed_at is not None) == ("submitted", True)
    assert Item.objects.get(pk=target.pk).n_done == 1
    event = AuditEvent.objects.get(action="annotation.submit")
    assert (event.actor_id, event.object_id, event.project_id, event.data) == (
        reviewer.pk, str(annotation.pk), project.pk,
        {"lease_id": lease.pk, "item_id": target.pk, "labels": ["ok"], "taxonomy_version": 1})
    assert retrains == [project.pk]


def test_replay_with_the_same_key_returns_the_first_answer_and_writes_nothing(
        retrains: list[int], django_capture_on_commit_callbacks: Any) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        first, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k",
                                           comment="looks fine")
        before = snapshot(target)
        again, created_again = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok", "ok"],
                                                 idempotency_key="k", comment="looks fine")
    assert (created, created_again, again.pk, again.labels) == (True, False, first.pk, ["ok"])
    assert snapshot(target) == before
    assert retrains == [project.pk]


@pytest.mark.parametrize(("labels", "comment", "says"), [
    (["bad"], "looks fine", "with labels ['ok']; a replay must send the same body"),
    (["ok"], "changed my mind", "with labels ['ok'] and another comment; a replay must send the same body"),
])
def test_the_same_key_with_another_body_is_422_and_writes_nothing(labels: list[str], comment: str, says: str) -> None:
    from labeling.services.errors import KeyReused

    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    first, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k",
                                 comment="looks fine")
    before = snapshot(target)
    with pytest.raises(KeyReused) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels, idempotency_key="k", comment=comment)
    assert (refused.value.status, refused.value.message) == (
        422, f"idempotency_key 'k' was already used for annotation {first.pk} {says}, and a new answer needs a new key")
    assert snapshot(target) == before


def test_a_replay_of_an_undone_submit_is_409_and_creates_nothing() -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["bad"], idempotency_key="k1")
    annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    before = snapshot(target)
    with pytest.raises(Conflict) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["bad"], idempotency_key="k1")
    assert (refused.value.status, refused.value.message, refused.value.extra) == (
        409, "the submit with idempotency_key 'k1' was undone; submit again with a new key", {"state": "undone"})
    assert snapshot(target) == before
    # A new answer with a new key is taken, and its own replay answers with it; the undone key stays refused.
    second, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k2")
    replay, replayed = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k2")
    assert (created, replayed, replay.pk, replay.labels) == (True, False, second.pk, ["ok"])
    assert Lease.objects.get(pk=lease.pk).undone_idempotency_keys == ["k1"]
    assert list(Annotation.objects.values_list("labels", flat=True)) == [["ok"]]


def test_replay_without_a_key_is_409_already_submitted() -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    first, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    before = snapshot(target)
    with pytest.raises(Conflict) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert (refused.value.message, refused.value.extra["annotation_id"]) == ("lease already submitted", first.pk)
    assert snapshot(target) == before


def test_a_key_reused_on_another_lease_is_409() -> None:
    project, target, (reviewer, _) = setup()
    ItemFactory(project=project, external_id="second", random_key=0.9)
    lease = checkout(project, reviewer)
    first, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="same")
    other = checkout(project, reviewer)
    before = snapshot(target)
    with pytest.raises(Conflict, match=f"already used for annotation {first.pk} on another lease"):
        annotation_submit(lease_id=other.pk, reviewer=reviewer, labels=["ok"], idempotency_key="same")
    assert snapshot(target) == before


def test_someone_elses_lease_is_403_and_changes_nothing(retrains: list[int]) -> None:
    project, target, (owner, intruder) = setup()
    lease = checkout(project, owner)
    before = snapshot(target)
    with pytest.raises(PermissionDenied, match=f"lease {lease.pk} belongs to another reviewer"):
        annotation_submit(lease_id=lease.pk, reviewer=intruder, labels=["ok"])
    for action in (lease_skip, lease_renew, annotation_undo):
        with pytest.raises(PermissionDenied):
            action(lease_id=lease.pk, reviewer=intruder)
    assert snapshot(target) == before
    assert retrains == []


@pytest.mark.parametrize("state", ["skipped", "released"])
def test_a_closed_lease_is_409(state: str) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    Lease.objects.filter(pk=lease.pk).update(state=state)
    before = snapshot(target)
    with pytest.raises(Conflict, match=f"lease {lease.pk} was already {state}; take the next item"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert snapshot(target) == before


def test_an_expired_lease_is_409_naming_the_expiry_and_writes_nothing(
        retrains: list[int], django_capture_on_commit_callbacks: Any) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    expired_at = datetime(2020, 5, 6, 7, 8, 9, tzinfo=UTC)
    Lease.objects.filter(pk=lease.pk).update(expires_at=expired_at)
    before = snapshot(target)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(Conflict) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="late")
    assert refused.value.message == "lease expired at 2020-05-06 07:08:09 UTC; take the next item"
    assert snapshot(target) == before
    assert (callbacks, retrains) == ([], [])


def test_unknown_label_is_400_naming_it_and_writes_nothing(retrains: list[int]) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    before = snapshot(target)
    with pytest.raises(ValidationFailed) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spma"])
    assert refused.value.message == "unknown label 'spma' in taxonomy version 1; valid labels: bad, ok"
    assert refused.value.extra == {"field": "labels", "labels": ["spma"]}
    with pytest.raises(ValidationFailed, match=r"unknown labels 'x', 'y' in taxonomy version 1"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok", "x", "y"])
    assert snapshot(target) == before
    assert retrains == []


@pytest.mark.parametrize("labels", [[], "ok", None, [1], [""], {"ok": True}])
def test_labels_must_be_a_non_empty_list_of_keys(labels: Any) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    before = snapshot(target)
    with pytest.raises(ValidationFailed, match=r"^labels: must be a non-empty list of label keys$"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    assert snapshot(target) == before


def test_single_label_taxonomy_refuses_two_keys_but_collapses_duplicates() -> None:
    project, _target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    with pytest.raises(ValidationFailed, match=r"^this taxonomy takes exactly one label; got 2: 'ok', 'bad'$"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok", "bad"])
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok", "ok"])
    assert Annotation.objects.get(pk=annotation.pk).labels == ["ok"]


def test_multi_label_taxonomy_takes_several_keys_in_order_without_duplicates() -> None:
    project, _target, (reviewer, _) = setup(MULTI)
    lease = checkout(project, reviewer)
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["c", "a", "c"])
    assert Annotation.objects.get(pk=annotation.pk).labels == ["c", "a"]


def test_non_leaf_and_deprecated_labels_are_refused_by_name() -> None:
    project, _target, (reviewer, _) = setup(HIERARCHY)
    lease = checkout(project, reviewer)
    with pytest.raises(ValidationFailed) as inner:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["hate"])
    assert inner.value.message == "label 'hate' is not a leaf; choose one of its children ('hate/slur', 'hate/threat')"
    with pytest.raises(ValidationFailed) as old:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["old"])
    assert old.value.message == "deprecated label 'old' in taxonomy version 1; choose a current label"
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["hate/threat"])
    assert annotation.labels == ["hate/threat"]


def test_non_leaf_keys_are_accepted_where_the_taxonomy_allows_them() -> None:
    project, _target, (reviewer, _) = setup({**HIERARCHY, "allow_non_leaf": True})
    lease = checkout(project, reviewer)
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["hate"])
    assert annotation.labels == ["hate"]


def test_labels_are_checked_against_the_leases_version_after_a_new_publish() -> None:
    project, _target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    first_version = project.current_taxonomy_version_id
    taxonomy_publish_document(project=project, actor=None, changelog="rename", parsed=taxonomy_parse(
        {"name": "v2", "labels": [{"key": "fine", "name": "Fine"}, {"key": "bad", "name": "Bad"}]}))
    assert Project.objects.get(pk=project.pk).current_taxonomy_version_id != first_version
    with pytest.raises(ValidationFailed, match="unknown label 'fine' in taxonomy version 1"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["fine"])
    annotation, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert (created, annotation.taxonomy_version_id, annotation.labels) == (True, first_version, ["ok"])


@pytest.mark.parametrize(("gold", "labels", "expected"), [
    (["bad"], ["bad"], True), (["bad"], ["ok"], False), ("bad", ["bad"], True), (None, ["ok"], None),
])
def test_gold_items_are_scored_against_their_expected_answer(gold: Any, labels: list[str],
                                                             expected: bool | None) -> None:
    project, _target, (reviewer, _) = setup(is_gold=gold is not None, gold_labels=gold)
    # Gold items are only served by gold mixing; make every checkout a gold draw.
    project.gold_rate = 1.0
    lease = checkout(project, reviewer)
    assert (lease.selection_reason == "gold") is (gold is not None)
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    assert Annotation.objects.get(pk=annotation.pk).gold_correct is expected


def test_a_rolled_back_submit_requests_no_retrain(retrains: list[int], django_capture_on_commit_callbacks: Any) -> None:
    project, _target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
        raise RuntimeError("the caller's transaction fails after the submit")
    assert retrains == []
    assert Annotation.objects.count() == 0


def test_each_committed_submit_requests_one_retrain(retrains: list[int],
                                                    django_capture_on_commit_callbacks: Any) -> None:
    project, target, people = setup(overlap=2)
    with django_capture_on_commit_callbacks(execute=True):
        for reviewer in people:
            lease = checkout(project, reviewer)
            annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert retrains == [project.pk, project.pk]
    assert Item.objects.get(pk=target.pk).n_done == 2


def test_an_existing_annotation_without_a_lease_turns_the_race_into_a_409_not_a_500() -> None:
    project, target, (reviewer, _) = setup()
    lease = Lease.objects.create(project=project, item=target, reviewer=reviewer, selection_reason="other",
                                 expires_at=FIXED_NOW + timedelta(days=3650),
                                 taxonomy_version=project.current_taxonomy_version)
    version = project.current_taxonomy_version
    assert version is not None
    existing = Annotation.objects.create(project=project, item=target, reviewer=reviewer, labels=["bad"],
                                         taxonomy_version=version, selection_reason="other")
    before = snapshot(target)
    with pytest.raises(Conflict) as refused:
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert (refused.value.message, refused.value.extra) == (
        "you have already labelled this item; take the next item", {"annotation_id": existing.pk})
    assert snapshot(target) == before


# --- skip -------------------------------------------------------------------------------------------------------


def test_skip_closes_the_lease_for_good_and_does_not_count() -> None:
    project, target, (reviewer, other) = setup()
    lease = checkout(project, reviewer)
    skipped = lease_skip(lease_id=lease.pk, reviewer=reviewer)
    stored = Lease.objects.get(pk=lease.pk)
    assert (skipped.state, stored.state, stored.closed_at is not None) == ("skipped", "skipped", True)
    assert Item.objects.get(pk=target.pk).n_done == 0
    assert list(AuditEvent.objects.filter(action="lease.skip").values_list("object_id", "data")) == [
        (str(lease.pk), {"item_id": target.pk})]
    assert queue_checkout_next(project=project, reviewer=reviewer) is None
    assert checkout(project, other).item_id == target.pk
    before = snapshot(target)
    with pytest.raises(Conflict, match="was already skipped; nothing to skip"):
        lease_skip(lease_id=lease.pk, reviewer=reviewer)
    assert snapshot(target) == before


# --- renew ------------------------------------------------------------------------------------------------------


def test_renew_restarts_the_lease_period_from_now(monkeypatch: pytest.MonkeyPatch) -> None:
    project, _target, (reviewer, _) = setup()
    Project.objects.filter(pk=project.pk).update(lease_seconds=300)
    project.refresh_from_db()
    lease = checkout(project, reviewer)
    monkeypatch.setattr("labeling.services.annotations.timezone.now", lambda: FIXED_NOW)
    Lease.objects.filter(pk=lease.pk).update(expires_at=FIXED_NOW + timedelta(seconds=5))
    renewed = lease_renew(lease_id=lease.pk, reviewer=reviewer)
    stored = Lease.objects.get(pk=lease.pk)
    assert (renewed.expires_at, stored.expires_at, stored.renewals) == (
        FIXED_NOW + timedelta(seconds=300), FIXED_NOW + timedelta(seconds=300), 1)


@pytest.mark.parametrize("problem", ["expired", "skipped", "submitted"])
def test_renew_refuses_a_lease_that_no_longer_holds(problem: str) -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    if problem == "expired":
        Lease.objects.filter(pk=lease.pk).update(expires_at=F("created_at") - timedelta(seconds=1))
    else:
        Lease.objects.filter(pk=lease.pk).update(state=problem)
    before = snapshot(target)
    with pytest.raises(Conflict, match="lease expired at" if problem == "expired" else f"was already {problem}"):
        lease_renew(lease_id=lease.pk, reviewer=reviewer)
    assert snapshot(target) == before


# --- undo -------------------------------------------------------------------------------------------------------


def test_undo_within_the_window_reopens_the_same_lease(retrains: list[int],
                                                       django_capture_on_commit_callbacks: Any) -> None:
    project, target, (reviewer, _) = setup()
    ItemFactory(project=project, external_id="second", random_key=0.9)
    lease = checkout(project, reviewer)
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["bad"])
    moved_on = checkout(project, reviewer)
    assert moved_on.item.external_id == "second"
    with django_capture_on_commit_callbacks(execute=True):
        reopened = annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert (reopened.pk, reopened.state, reopened.item.external_id) == (lease.pk, "active", "target")
    assert reopened.expires_at > Lease.objects.get(pk=lease.pk).created_at
    assert Annotation.objects.filter(pk=annotation.pk).exists() is False
    assert Item.objects.get(pk=target.pk).n_done == 0
    stored = Lease.objects.get(pk=lease.pk)
    assert (stored.state, stored.closed_at) == ("active", None)
    # One lease per reviewer: the item they had moved on to goes back to the queue.
    assert Lease.objects.get(pk=moved_on.pk).state == "released"
    event = AuditEvent.objects.get(action="annotation.undo")
    assert (event.object_id, event.data["labels"], event.data["lease_id"], event.data["item_id"]) == (
        str(annotation.pk), ["bad"], lease.pk, target.pk)
    assert retrains == [project.pk]
    # The page's next call shows the reopened item, and it can be submitted again.
    assert checkout(project, reviewer).pk == lease.pk
    again, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    assert (created, again.labels, Item.objects.get(pk=target.pk).n_done) == (True, ["ok"], 1)


def test_undo_after_the_window_is_409_and_changes_nothing(settings: Any) -> None:
    settings.SIFT_UNDO_SECONDS = 30
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    submitted_at = datetime(2021, 1, 1, 12, 0, 0, tzinfo=UTC)
    Annotation.objects.filter(pk=annotation.pk).update(created_at=submitted_at)
    before = snapshot(target)
    with pytest.raises(Conflict) as refused:
        annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert refused.value.message == "the 30 s undo window closed at 2021-01-01 12:00:30 UTC"
    assert snapshot(target) == before


def test_undo_of_a_lease_that_was_not_submitted_is_409() -> None:
    project, target, (reviewer, _) = setup()
    lease = checkout(project, reviewer)
    before = snapshot(target)
    with pytest.raises(Conflict, match=f"only a submitted lease can be undone; lease {lease.pk} is active"):
        annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert snapshot(target) == before


def test_undo_forgets_the_rank_floor_so_the_item_is_found_at_its_rank(
        django_capture_on_commit_callbacks: Any) -> None:
    project, target, (reviewer, other) = setup()
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=1, start_rank=0,
                                     rows=[RankingRow(item_id=target.pk, score=1.0, reason="uncertainty")])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=1)
    project.refresh_from_db()
    lease = checkout(project, reviewer)
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
    key = queues._floor_key(project, 1)
    cache.delete(key + ":fresh")  # make the next checkout re-read the floor now
    assert queue_checkout_next(project=project, reviewer=other) is None
    assert queues._decode_floor(cache.get(key)) == (1, True)
    with django_capture_on_commit_callbacks(execute=True):
        annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert (cache.get(key), cache.get(key + ":fresh")) == (None, None)


def test_undo_takes_back_the_extra_answer_its_split_re_queue_asked_for() -> None:
    """A submit on a lease older than a split re-queues its item (one more answer, boosted); undoing that submit
    puts the item back exactly as it was, so nobody is asked for an answer that exists for no reason."""
    from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save

    flat = {"name": "Abuse", "multi_label": False, "labels": [{"key": "ok", "name": "OK"},
                                                              {"key": "hate", "name": "Hate"}]}
    project, target, (reviewer, _) = setup(flat)
    lead = member(project, username=f"{project.slug}-lead", role="policy_lead")
    lease = checkout(project, reviewer)
    taxonomy_draft_save(actor=lead, project=project, document={**flat, "labels": [
        {"key": "ok", "name": "OK"}, {"key": "slur", "name": "Slur"}, {"key": "threat", "name": "Threat"}]},
        migrations=[{"kind": "split", "sources": ["hate"], "targets": ["slur", "threat"], "requeue_priority": 7}])
    taxonomy_draft_publish(actor=lead, project=project, changelog="split hate")

    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["hate"])
    item = Item.objects.get(pk=target.pk)
    assert (item.n_required, item.boost, item.n_done) == (2, 7, 1)
    assert Annotation.objects.get(pk=annotation.pk).requeued_item == {"n_required": [1, 2], "boost": [0, 7]}

    annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    item = Item.objects.get(pk=target.pk)
    assert (item.n_required, item.boost, item.n_done) == (1, 0, 0)


def test_undo_withdraws_the_pending_adjudication_the_finished_item_had_opened() -> None:
    from labeling.models import Adjudication
    from labeling.services.adjudication import adjudication_open

    project, target, (first, second) = setup(overlap=2)
    annotation_submit(lease_id=checkout(project, first).pk, reviewer=first, labels=["ok"])
    lease = checkout(project, second)
    annotation_submit(lease_id=lease.pk, reviewer=second, labels=["bad"])
    opened = Adjudication.objects.get(item=target)
    assert (opened.state, opened.reason) == ("pending", "disagreement")

    annotation_undo(lease_id=lease.pk, reviewer=second)
    assert not Adjudication.objects.filter(item=target).exists()
    event = AuditEvent.objects.get(action="adjudication.withdraw")
    assert (event.actor_id, event.data) == (second.pk, {
        "adjudication_id": opened.pk, "item_id": target.pk, "reason": "disagreement", "why": "an answer was undone"})
    # Answered again in agreement: the finished item needs no lead.
    annotation_submit(lease_id=lease.pk, reviewer=second, labels=["ok"])
    assert not Adjudication.objects.filter(item=target).exists()
    # A lead's own adjudication is theirs: an undo leaves it.
    lead = member(project, username=f"{project.slug}-lead", role="policy_lead")
    adjudication_open(project=project, external_id=target.external_id, actor=lead)
    annotation_undo(lease_id=lease.pk, reviewer=second)
    assert Adjudication.objects.get(item=target).reason == "manual"
