"""The retrain service (learning/services/retrain.py): fit, score, rank, batched write, one-row switch, prune."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.db.models import Count
from django.utils import timezone

from config.celery import app
from labeling.models import Annotation, Item, Project, RankingEntry, RankingEntryManager, RankingRow
from learning import jobs
from learning.models import LearningJob, ModelVersion
from learning.services import model_version_train
from learning.services import retrain as retrain_module
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, UserFactory
from tests.learning.support import add_items, annotate, embed_items

SPAM = [f"win a free prize cash now call {i} claim your reward" for i in range(30)]
HAM = [f"see you at dinner tonight love mum {i} ok" for i in range(30)]


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    return calls


def _project(slug: str = "rt", **settings: Any) -> Project:
    return ProjectFactory(slug=slug, taxonomy=settings.pop("taxonomy", SMS_TAXONOMY), embedder="hashing", **settings)


def _pool(project: Project) -> list[Item]:
    """60 embedded items: 30 spam-like then 30 ham-like texts, interleaved."""
    texts = [t for pair in zip(SPAM, HAM, strict=True) for t in pair]
    items = add_items(project, texts)
    embed_items(items)
    return items


def _label(items: list[Item], n: int, reviewer: Any = None) -> None:
    """Label the first ``n`` items truthfully (even positions are spam)."""
    reviewer = reviewer or UserFactory(username="oracle")
    for item in items[:n]:
        annotate(item, reviewer, ["spam" if "prize" in item.text else "ham"])


def _entries(project: Project, version: int) -> list[dict[str, Any]]:
    return list(RankingEntry.objects.filter(project=project, ranking_version=version).order_by("rank").values(
        "rank", "item_id", "reason", "score", "inclusion_probability", "suggested_label", "suggested_confidence"))


def test_cold_start_ranking_before_any_label(db: Any, settings: Any) -> None:
    settings.SIFT_COLD_START_DEPTH = 20
    project = _project()
    _pool(project)
    result = model_version_train(project_id=project.pk)
    assert (result.outcome, result.version, result.n_ranked) == ("activated", 1, 20)
    project.refresh_from_db()
    assert project.active_ranking_version == 1
    entries = _entries(project, 1)
    assert [e["rank"] for e in entries] == list(range(20))
    assert len({e["item_id"] for e in entries}) == 20
    explored = [e for e in entries if e["reason"] == "exploration"]
    assert len(explored) == 2  # floor(20 * 0.1), one in each run of ten positions (random phase)
    assert [e["rank"] // 10 for e in explored] == [0, 1]
    assert {e["inclusion_probability"] for e in explored} == {2 / 60}
    assert {e["reason"] for e in entries} - {"exploration"} <= {"cold_start_diverse", "random"}
    assert {(e["suggested_label"], e["suggested_confidence"]) for e in entries} == {("", None)}
    version = ModelVersion.objects.get(project=project)
    assert (version.status, version.cold_start, version.n_labels, version.n_pool, version.n_ranked) == (
        ModelVersion.Status.ACTIVE, True, 0, 60, 20)
    assert version.strategy == "margin_exploit"
    assert {"load", "fit", "score", "rank", "write", "activate", "total", "evaluate", "prune"} <= set(version.timings)
    assert version.activated_at is not None


def test_seed_queries_go_first_in_a_cold_start(db: Any, settings: Any) -> None:
    settings.SIFT_COLD_START_DEPTH = 10
    project = _project(seed_queries=["win a free prize cash now"])
    _pool(project)
    model_version_train(project_id=project.pk)
    entries = _entries(project, 1)
    assert entries[0]["reason"] == "seed_query"
    first = Item.objects.get(pk=entries[0]["item_id"])
    assert "prize" in first.text


def test_a_model_ranks_the_whole_open_pool_with_suggestions(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seed is derived from the project's id, which depends on how many projects earlier tests created: pin it,
    # so the exact figures below do not depend on test order.
    monkeypatch.setattr(retrain_module, "_seed", lambda project_id, version: 1234 + version)
    project = _project()
    items = _pool(project)
    _label(items, 20)
    result = model_version_train(project_id=project.pk)
    assert (result.outcome, result.n_ranked) == ("activated", 40)
    entries = _entries(project, 1)
    labelled = {i.pk for i in items[:20]}
    assert {e["item_id"] for e in entries} == {i.pk for i in items[20:]}
    assert not labelled & {e["item_id"] for e in entries}
    explored = [e for e in entries if e["reason"] == "exploration"]
    assert len(explored) == 4 and {e["inclusion_probability"] for e in explored} == {4 / 40}
    assert {e["inclusion_probability"] for e in entries if e["reason"] != "exploration"} == {1.0}
    # A balanced pool (20 spam, 20 ham open): the default's exploitation share is 0.5 * (1 - balance) with the
    # estimated balance near 1 (learning/core/strategies.py), so it takes only the first position.
    reasons = [e["reason"] for e in entries]
    assert set(reasons) == {"exploration", "uncertainty", "exploitation"}
    assert reasons.count("exploitation") == 1
    assert next(r for r in reasons if r != "exploration") == "exploitation"
    # Every entry carries the model's suggestion, and on these separable texts it is right.
    for e in entries:
        item = Item.objects.get(pk=e["item_id"])
        assert e["suggested_label"] == ("spam" if "prize" in item.text else "ham")
        assert 0.5 <= e["suggested_confidence"] <= 1.0
    version = ModelVersion.objects.get(project=project, version=1)
    assert (version.cold_start, version.n_labels, version.n_ranked) == (False, 20, 40)
    assert version.metrics["class_counts"] == {"ham": 10, "spam": 10}
    assert version.metrics["cv"]["folds"] == 5 and version.metrics["cv"]["n"] == 20
    assert version.metrics["cv"]["macro_f1"] == 1.0
    assert version.metrics["exploration"] is None  # no answer came from an exploration pick yet
    assert version.metrics["ranking_reasons"]["exploration"] == 4


def test_exploration_answers_give_the_unbiased_figures(db: Any) -> None:
    project = _project()
    items = _pool(project)
    reviewer = UserFactory(username="oracle")
    for n, item in enumerate(items[:20]):
        label = "spam" if "prize" in item.text else "ham"
        # Every fourth answer came from an exploration pick drawn with probability 0.1.
        annotate(item, reviewer, [label], reason="exploration" if n % 4 == 0 else "uncertainty",
                 inclusion=0.1 if n % 4 == 0 else 1.0)
    model_version_train(project_id=project.pk)
    exploration = ModelVersion.objects.get(project=project).metrics["exploration"]
    # Items 0, 4, 8, 12, 16 are all at even positions: spam.
    assert exploration["n"] == 5
    assert exploration["prevalence"] == {"ham": 0.0, "spam": 1.0}
    assert exploration["accuracy"] == 1.0


def test_new_labels_supersede_the_model_and_prune_old_rankings(db: Any, settings: Any) -> None:
    settings.SIFT_COLD_START_DEPTH = 10
    project = _project()
    items = _pool(project)
    reviewer = UserFactory(username="oracle")
    assert model_version_train(project_id=project.pk).version == 1
    _label(items, 10, reviewer)
    assert model_version_train(project_id=project.pk).version == 2
    _label(items[10:], 10, reviewer)
    assert model_version_train(project_id=project.pk).version == 3
    statuses = dict(ModelVersion.objects.filter(project=project).values_list("version", "status"))
    assert statuses == {1: "superseded", 2: "superseded", 3: "active"}
    counts = {v: RankingEntry.objects.filter(project=project, ranking_version=v).count() for v in (1, 2, 3)}
    assert counts == {1: 0, 2: 50, 3: 40}  # v1 pruned, the previous version kept
    project.refresh_from_db()
    assert project.active_ranking_version == 3


def test_running_it_again_without_news_is_a_noop(db: Any) -> None:
    project = _project()
    items = _pool(project)
    _label(items, 10)
    first = model_version_train(project_id=project.pk)
    rows = RankingEntry.objects.count()
    second = model_version_train(project_id=project.pk)
    assert (first.outcome, second.outcome, second.version) == ("activated", "noop", 1)
    assert ModelVersion.objects.count() == 1
    assert RankingEntry.objects.count() == rows


def test_an_undo_changes_the_fingerprint(db: Any) -> None:
    project = _project()
    items = _pool(project)
    _label(items, 10)
    model_version_train(project_id=project.pk)
    items[9].annotations.get().delete()
    Item.objects.filter(pk=items[9].pk).update(n_done=0)
    result = model_version_train(project_id=project.pk)
    assert (result.outcome, result.version) == ("activated", 2)
    assert ModelVersion.objects.get(project=project, version=2).n_labels == 9


def test_a_failure_marks_the_version_failed_and_keeps_the_active_ranking(db: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project()
    items = _pool(project)
    _label(items, 10)
    model_version_train(project_id=project.pk)
    _label(items[10:], 4)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ValueError("boom in the ranking")

    monkeypatch.setattr(retrain_module, "rank_pool", broken)
    with pytest.raises(ValueError, match="boom"):
        model_version_train(project_id=project.pk)
    failed = ModelVersion.objects.get(project=project, version=2)
    assert failed.status == ModelVersion.Status.FAILED
    assert failed.error.startswith("ValueError: boom in the ranking")
    assert failed.activated_at is None
    project.refresh_from_db()
    assert project.active_ranking_version == 1
    assert ModelVersion.objects.get(project=project, version=1).status == ModelVersion.Status.ACTIVE
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.RETRAIN)
    assert job.running_token is None and job.last_error == "ValueError: boom in the ranking"
    # Fixed: the same fingerprint is retried (a failed attempt does not count as done).
    monkeypatch.undo()
    monkeypatch.setattr(app, "send_task", lambda *a, **k: None)
    assert model_version_train(project_id=project.pk).version == 3


def test_a_crash_mid_write_never_activates_and_its_rows_are_pruned(db: Any, settings: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SIFT_RANKING_WRITE_BATCH = 10
    project = _project()
    items = _pool(project)
    _label(items, 10)
    model_version_train(project_id=project.pk)  # v1: 50 rows
    _label(items[10:], 4)
    real = RankingEntryManager.write_columns
    calls = {"n": 0}

    def dies_on_third_batch(self: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("connection reset while writing")
        return real(self, **kwargs)

    monkeypatch.setattr(RankingEntryManager, "write_columns", dies_on_third_batch)
    with pytest.raises(OSError):
        model_version_train(project_id=project.pk)
    project.refresh_from_db()
    assert project.active_ranking_version == 1
    assert RankingEntry.objects.filter(project=project, ranking_version=2).count() == 20  # orphan, never active
    assert ModelVersion.objects.get(project=project, version=2).status == ModelVersion.Status.FAILED
    monkeypatch.setattr(RankingEntryManager, "write_columns", real)
    assert model_version_train(project_id=project.pk).version == 3
    counts = dict(RankingEntry.objects.filter(project=project).values("ranking_version").annotate(
        n=Count("id")).values_list("ranking_version", "n"))
    assert counts == {1: 50, 3: 46}


def test_a_killed_workers_attempt_is_abandoned_and_cleaned_up(db: Any, settings: Any) -> None:
    settings.SIFT_LEARNING_STALE_SECONDS = 60
    project = _project()
    items = _pool(project)
    _label(items, 10)
    model_version_train(project_id=project.pk)
    # What a SIGKILL mid-write leaves: a live-looking claim, a "training" row and part of its ranking.
    dead = jobs.claim(kind=LearningJob.Kind.RETRAIN, project_id=project.pk)
    assert dead is not None
    ModelVersion.objects.create(project=project, version=2, fingerprint="dead", embedder="hashing-v1-384",
                                strategy="margin_exploit")
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=2, start_rank=0,
                                     rows=[RankingRow(item_id=items[-1].pk, score=0.5, reason="uncertainty")])
    _label(items[10:], 2)
    assert model_version_train(project_id=project.pk).outcome == "busy"  # the claim is not stale yet
    LearningJob.objects.filter(project=project).update(running_since=timezone.now() - timedelta(seconds=61))
    result = model_version_train(project_id=project.pk)
    assert (result.outcome, result.version) == ("activated", 3)
    abandoned = ModelVersion.objects.get(project=project, version=2)
    assert abandoned.status == ModelVersion.Status.FAILED
    assert abandoned.error.startswith("abandoned")
    assert not RankingEntry.objects.filter(project=project, ranking_version=2).exists()
    project.refresh_from_db()
    assert project.active_ranking_version == 3


def test_a_run_that_lost_its_claim_does_not_activate(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project()
    items = _pool(project)
    _label(items, 10)
    model_version_train(project_id=project.pk)
    _label(items[10:], 2)
    def taken_over_before_switch(*_a: Any, **_k: Any) -> bool:
        return False

    # The write finished, then the claim was taken over (the run stalled past the stale cutoff).
    original = retrain_module._write_ranking

    def write_then_lose(*a: Any, **k: Any) -> int:
        n = original(*a, **k)
        monkeypatch.setattr(jobs, "heartbeat", taken_over_before_switch)
        return n

    monkeypatch.setattr(retrain_module, "_write_ranking", write_then_lose)
    with pytest.raises(retrain_module.LostClaim):
        model_version_train(project_id=project.pk)
    project.refresh_from_db()
    assert project.active_ranking_version == 1
    assert ModelVersion.objects.get(project=project, version=2).status == ModelVersion.Status.FAILED


def test_depth_is_capped(db: Any, settings: Any) -> None:
    settings.SIFT_RANKING_MAX_DEPTH = 15
    project = _project()
    items = _pool(project)
    _label(items, 10)
    assert model_version_train(project_id=project.pk).n_ranked == 15
    assert RankingEntry.objects.filter(project=project).count() == 15


def test_gold_items_are_never_ranked_and_suggestions_can_be_off(db: Any) -> None:
    project = _project(show_suggestions=False)
    items = _pool(project)
    Item.objects.filter(pk=items[-1].pk).update(is_gold=True, gold_labels=["ham"])
    _label(items, 10)
    model_version_train(project_id=project.pk)
    entries = _entries(project, 1)
    assert len(entries) == 49
    assert items[-1].pk not in {e["item_id"] for e in entries}
    assert {(e["suggested_label"], e["suggested_confidence"]) for e in entries} == {("", None)}


def test_no_vectors_yet_is_recorded_once(db: Any) -> None:
    project = _project()
    add_items(project, ["not embedded yet"])
    first = model_version_train(project_id=project.pk)
    second = model_version_train(project_id=project.pk)
    assert (first.outcome, second.outcome) == ("empty", "noop")
    version = ModelVersion.objects.get(project=project)
    assert (version.status, version.n_pool) == (ModelVersion.Status.FAILED, 0)
    assert version.error.startswith("no item has a vector yet")
    project.refresh_from_db()
    assert project.active_ranking_version is None


def test_labels_while_nothing_is_embedded_refresh_the_one_empty_row(db: Any) -> None:
    """Each new label changes the fingerprint; the empty-pool attempt is still one row, brought up to date."""
    project = _project()
    items = add_items(project, ["first", "second", "third"])
    assert model_version_train(project_id=project.pk).outcome == "empty"
    reviewer = UserFactory(username="oracle")
    for item in items[:2]:
        annotate(item, reviewer, ["ham"])
        assert model_version_train(project_id=project.pk).outcome == "empty"
    version = ModelVersion.objects.get(project=project)
    newest = Annotation.objects.filter(project=project).order_by("-id").values_list("id", flat=True).first()
    assert (version.version, version.status, version.n_pool, version.n_annotations, version.max_annotation_id) == (
        1, ModelVersion.Status.FAILED, 0, Annotation.objects.filter(project=project).count(), newest)
    assert model_version_train(project_id=project.pk).outcome == "noop"


def test_an_unknown_strategy_fails_the_version_with_the_registrys_message(db: Any) -> None:
    project = _project()
    _pool(project)
    Project.objects.filter(pk=project.pk).update(strategy="bogus")
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        model_version_train(project_id=project.pk)
    version = ModelVersion.objects.get(project=project)
    assert (version.status, version.strategy) == (ModelVersion.Status.FAILED, "bogus")


HIERARCHY = {
    "name": "Abuse",
    "multi_label": True,
    "labels": [
        {"key": "abuse", "name": "Abuse", "children": [
            {"key": "scam", "name": "Scam"}, {"key": "insult", "name": "Insult"}]},
        {"key": "benign", "name": "Benign"},
    ],
}


def test_multi_label_hierarchical_projects_train_on_leaves(db: Any) -> None:
    project = _project(taxonomy=HIERARCHY)
    items = _pool(project)
    reviewer = UserFactory(username="oracle")
    for item in items[:20]:
        annotate(item, reviewer, ["scam", "insult"] if "prize" in item.text else ["benign"])
    result = model_version_train(project_id=project.pk)
    assert result.outcome == "activated"
    version = ModelVersion.objects.get(project=project)
    assert version.metrics["class_counts"] == {"scam": 10, "insult": 10, "benign": 10}
    entries = _entries(project, 1)
    assert len(entries) == 40
    assert {e["suggested_label"] for e in entries} <= {"scam", "insult", "benign"}
    scores = np.array([e["score"] for e in entries])
    assert np.all(np.isfinite(scores))


@pytest.mark.django_db(transaction=True)
def test_an_out_of_order_commit_plus_an_undo_is_not_mistaken_for_a_seen_label_set(
    postgres_only: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14: (newest annotation id, count) comes back to the first model's pair over a different label set;
    the label counter does not, so the second retrain runs (and a third call is still a no-op)."""
    import threading

    from django.db import connection, transaction

    from labeling.models import LabelCounter
    from labeling.services import annotations as annotations_module
    from labeling.services.annotations import annotation_submit, annotation_undo
    from labeling.services.queues import queue_checkout_next
    from tests.factories import member

    project = _project(slug="ooo")
    _pool(project)
    first, slow, fast = (member(project, username=name, role="reviewer") for name in ("first", "slow", "fast"))
    leases: dict[str, Any] = {user.username: queue_checkout_next(project=project, reviewer=user)
                              for user in (first, slow, fast)}
    assert all(lease is not None for lease in leases.values())
    early, _ = annotation_submit(lease_id=leases["first"].pk, reviewer=first, labels=["ham"])

    # The slow submit has inserted its annotation (taking the lower id) and pauses before it commits.
    inserted, go = threading.Event(), threading.Event()
    real_map_forward = annotations_module.annotation_map_forward  # type: ignore[attr-defined]

    def pause_in_the_slow_submit(**kwargs: Any) -> Any:
        out = real_map_forward(**kwargs)
        if threading.current_thread().name == "slow-submit":
            inserted.set()
            assert go.wait(timeout=60)
        return out

    monkeypatch.setattr(annotations_module, "annotation_map_forward", pause_in_the_slow_submit)
    slow_ids: list[int] = []
    errors: list[BaseException] = []

    def slow_submit() -> None:
        try:
            with transaction.atomic():
                annotation, _ = annotation_submit(lease_id=leases["slow"].pk, reviewer=slow, labels=["spam"])
                slow_ids.append(annotation.pk)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_submit, name="slow-submit")
    thread.start()
    assert inserted.wait(timeout=60)
    late, _ = annotation_submit(lease_id=leases["fast"].pk, reviewer=fast, labels=["spam"])
    v1 = model_version_train(project_id=project.pk)  # learns the first and the fast answer
    go.set()
    thread.join(timeout=60)
    assert errors == [] and len(slow_ids) == 1
    assert early.pk < slow_ids[0] < late.pk
    annotation_undo(lease_id=leases["first"].pk, reviewer=first)

    v2 = model_version_train(project_id=project.pk)
    assert (v1.outcome, v1.version, v2.outcome, v2.version) == ("activated", 1, "activated", 2)
    models = {m.version: m for m in ModelVersion.objects.filter(project=project)}
    # The old key collides: same newest id, same count, over {early, late} and then {slow, late}.
    assert (models[1].max_annotation_id, models[1].n_annotations) == (late.pk, 2)
    assert (models[2].max_annotation_id, models[2].n_annotations) == (late.pk, 2)
    assert models[1].fingerprint != models[2].fingerprint
    assert (models[1].n_labels, models[2].n_labels) == (2, 2)
    assert LabelCounter.objects.value(project_id=project.pk) == 4  # three submits and an undo
    # Call twice, effect once: nothing changed since v2.
    again = model_version_train(project_id=project.pk)
    assert (again.outcome, again.version) == ("noop", 2)
    assert ModelVersion.objects.filter(project=project).count() == 2
