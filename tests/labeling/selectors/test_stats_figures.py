"""labeling/selectors/quality.py: database rows to figures, with exact expected values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Adjudication, Annotation, Item, Lease, Project, RankingEntry, RankingRow, TaxonomyVersion
from labeling.selectors.quality import (
    agreement_figures,
    gold_alerts,
    prevalence_figures,
    queue_health,
    reviewer_figures,
    stats_summary,
    timeline,
)
from labeling.stats import SampleRound, krippendorff_alpha_nominal, sequential_prevalence
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

TREE: dict[str, Any] = {
    "name": "Tree",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "OK"},
        {"key": "spam", "name": "Spam", "children": [{"key": "spam/scam", "name": "Scam"},
                                                       {"key": "spam/promo", "name": "Promo"}]},
    ],
}


def make_project(**settings: Any) -> Project:
    return ProjectFactory(slug="figs", taxonomy=TREE, **settings)


def current(project: Project) -> TaxonomyVersion:
    version = project.current_taxonomy_version
    assert version is not None
    return version


def alpha(units: list[list[Any]]) -> float:
    """Alpha as the figures report it (4 places), for units where it is defined."""
    value = krippendorff_alpha_nominal(units).alpha
    assert value is not None
    return round(value, 4)


def add(project: Project, item: Item, reviewer: Any, labels: list[str], *, reason: str = "uncertainty",
        model_version: int | None = None, inclusion: float | None = None, lead_ms: int | None = None,
        lease: Lease | None = None, when: datetime | None = None, version: TaxonomyVersion | None = None,
        gold_correct: bool | None = None) -> Annotation:
    annotation = Annotation.objects.create(
        project=project, item=item, reviewer=reviewer, lease=lease,
        taxonomy_version=version or current(project), labels=labels, selection_reason=reason,
        model_version=model_version, inclusion_probability=inclusion, lead_time_ms=lead_ms, gold_correct=gold_correct)
    if when is not None:
        Annotation.objects.filter(pk=annotation.pk).update(created_at=when)
    Item.objects.filter(pk=item.pk).update(n_done=Annotation.objects.filter(item=item).count())
    return annotation


def test_agreement_figures(db: Any) -> None:
    project = make_project()
    ann, bob, cy = (member(project, username=n, role="reviewer") for n in ("ann", "bob", "cy"))
    items = [ItemFactory(project=project) for _ in range(4)]
    add(project, items[0], ann, ["ok"])
    add(project, items[0], bob, ["ok"])
    add(project, items[1], ann, ["spam/scam"])
    add(project, items[1], bob, ["spam/promo"])
    add(project, items[1], cy, ["spam/scam"])
    add(project, items[2], ann, ["ok"])  # a single answer: not pairable
    add(project, items[3], bob, ["spam/promo"])
    add(project, items[3], cy, ["ok"])
    # Left out: a gold item's answers, and an answer given in an older taxonomy version that was never mapped.
    gold = ItemFactory(project=project, is_gold=True, gold_labels=["ok"])
    add(project, gold, ann, ["ok"])
    add(project, gold, bob, ["spam/scam"])
    old = TaxonomyVersion.objects.create(project=project, name="old", status="draft")
    add(project, items[2], bob, ["ok"], version=old)

    figures = agreement_figures(project)
    units = [["ok", "ok"], ["spam/scam", "spam/promo", "spam/scam"], ["spam/promo", "ok"]]
    expected = krippendorff_alpha_nominal(units)
    assert figures["alpha"] == alpha(units)
    # By hand: o_ok,ok = 2; unit 2 (weight 1/2): o_scam,scam = 1, o_scam,promo = o_promo,scam = 1;
    # unit 3: o_promo,ok = o_ok,promo = 1. n = 7 (ok 3, scam 2, promo 2): alpha = 1 - 6 * 4 / 32.
    assert (figures["n_units"], figures["n_values"]) == (3, 7)
    assert figures["confusion"]["labels"] == ["ok", "spam/scam", "spam/promo"]
    assert figures["confusion"]["matrix"] == [[2.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    assert expected.alpha == pytest.approx(1 - (7 - 1) * 4 / (49 - 9 - 4 - 4), abs=1e-12)  # n_c = 3, 2, 2
    per_label = {row["key"]: row for row in figures["per_label"]}
    assert list(per_label) == ["ok", "spam", "spam/scam", "spam/promo"]
    # "spam" rolls its children up: unit 2 all say spam, so spam disagrees only on unit 3.
    assert per_label["spam"]["alpha"] == alpha([[False, False], [True, True, True], [True, False]])
    assert per_label["spam/scam"]["n_units"] == 3
    kappas = {(k["reviewer_a"], k["reviewer_b"]): (k["n_items"], k["kappa"]) for k in figures["kappa"]}
    # ann-bob: (ok, ok), (scam, promo): p_o 1/2, p_e 1/4, kappa 1/3. ann-cy: one shared answer, p_e = 1.
    # bob-cy: (promo, scam), (promo, ok): p_o 0, p_e 0, kappa 0.
    assert kappas == {("ann", "bob"): (2, round(1 / 3, 4)), ("ann", "cy"): (1, None), ("bob", "cy"): (2, 0.0)}


def _prevalence_world() -> tuple[Project, list[Item]]:
    """10 pool items and one gold item. The answers, in order (ids rise with creation):

    1. item 1, random fallback order -> spam/scam     2. item 2, fallback -> ok
    3. item 3, ranking 1 uncertainty -> spam/promo    4. item 4, ranking 1 exploration -> ok
    5. item 5, ranking 1 exploration -> spam/scam     6. item 6, ranking 2 uncertainty -> spam/scam
    7. item 7, ranking 2 exploration -> ok            items 8-10 unlabelled.
    """
    project = make_project()
    rita = member(project, username="rita", role="reviewer")
    items: list[Item] = [ItemFactory(project=project, external_id=f"i{n}") for n in range(1, 11)]
    gold = ItemFactory(project=project, is_gold=True, gold_labels=["ok"])
    add(project, gold, rita, ["spam/scam"], reason="gold", gold_correct=False)
    add(project, items[0], rita, ["spam/scam"], reason="fallback_random")
    add(project, items[1], rita, ["ok"], reason="fallback_random")
    add(project, items[2], rita, ["spam/promo"], reason="uncertainty", model_version=1, inclusion=1.0)
    add(project, items[3], rita, ["ok"], reason="exploration", model_version=1, inclusion=0.25)
    add(project, items[4], rita, ["spam/scam"], reason="exploration", model_version=1, inclusion=0.25)
    add(project, items[5], rita, ["spam/scam"], reason="uncertainty", model_version=2, inclusion=1.0)
    add(project, items[6], rita, ["ok"], reason="exploration", model_version=2, inclusion=0.2)
    return project, items


def test_prevalence_rounds_from_the_database(db: Any) -> None:
    project, _items = _prevalence_world()
    figures = prevalence_figures(project)
    assert (figures["population"], figures["labelled"], figures["n_sample"], figures["n_rounds"]) == (10, 7, 5, 3)
    spam = next(row for row in figures["labels"] if row["key"] == "spam")
    # Rounds: fallback (frame 10, known 0, picks [1, 0]); ranking 1 (items 1-2 known: frame 8, 1 spam known,
    # picks [0, 1]); ranking 2 (items 1-5 known: frame 5, 3 spam known, picks [0]).
    # p = (x + sum j C / N_r) / (sum j N / N_r) = (2 + 2*1/8 + 1*3/5) / (2 + 2*10/8 + 1*10/5) = 2.85 / 6.5.
    assert spam["estimate"] == round(57 / 130, 4)
    reference = sequential_prevalence(population_size=10, rounds=[
        SampleRound(10, 0.0, [1.0, 0.0]), SampleRound(8, 1.0, [0.0, 1.0]), SampleRound(5, 3.0, [0.0])])
    assert reference.low is not None and reference.high is not None
    assert (spam["low"], spam["high"]) == (round(reference.low, 4), round(reference.high, 4))
    assert (spam["n_sample"], spam["sample_positives"], spam["naive"]) == (5, 2.0, round(4 / 7, 4))
    promo = next(row for row in figures["labels"] if row["key"] == "spam/promo")
    # Only the uncertainty pick said promo: it counts through the census of later rankings, never as a sample.
    assert promo["estimate"] == round((0 + 2 * 0 / 8 + 1 * 1 / 5) / 6.5, 4)
    assert promo["naive"] == round(1 / 7, 4)
    assert "Horvitz-Thompson" in figures["estimator"]


def test_prevalence_uses_adjudications_and_shares_of_answers(db: Any) -> None:
    project, items = _prevalence_world()
    tom = member(project, username="tom", role="reviewer")
    # Item 4 (a ranking-1 exploration pick) gets a second opinion: half its reviewers say scam.
    add(project, items[3], tom, ["spam/scam"], reason="exploration", model_version=1, inclusion=0.25)
    # Item 2 (fallback) is adjudicated to scam: the decision replaces the answers.
    Adjudication.objects.create(project=project, item=items[1], reason="manual", state="decided",
                                labels=["spam/scam"], taxonomy_version=project.current_taxonomy_version)
    spam = next(row for row in prevalence_figures(project)["labels"] if row["key"] == "spam")
    # Fallback picks [1, 1]; ranking 1 known 2 (items 1, 2), picks [0.5, 1]; ranking 2 known 1+1+1+0.5+1 = 4.5.
    x = 1 + 1 + 0.5 + 1 + 0
    assert spam["estimate"] == round((x + 2 * 2 / 8 + 1 * 4.5 / 5) / 6.5, 4)
    assert spam["sample_positives"] == 3.5


def test_prevalence_with_everything_labelled_is_a_census(db: Any) -> None:
    project = make_project()
    rita = member(project, username="rita", role="reviewer")
    for n, labels in enumerate((["ok"], ["spam/scam"], ["ok"], ["ok"])):
        add(project, ItemFactory(project=project), rita, labels, reason="uncertainty", model_version=n)
    figures = prevalence_figures(project)
    spam = next(row for row in figures["labels"] if row["key"] == "spam")
    assert (spam["estimate"], spam["low"], spam["high"], spam["method"]) == (0.25, 0.25, 0.25, "census")
    assert figures["estimator"].startswith("Census")


def test_reviewer_figures_and_gold_alert(db: Any) -> None:
    project = make_project(gold_accuracy_threshold=0.75)
    ann, bob = member(project, username="ann", role="reviewer"), member(project, username="bob", role="reviewer")
    now = timezone.now()

    def lease(item: Item, reviewer: Any, state: str = "submitted", suggestion: Any = None, hidden: bool = False,
              model_version: int | None = None) -> Lease:
        return Lease.objects.create(project=project, item=item, reviewer=reviewer, state=state,
                                    expires_at=now + timedelta(minutes=5), selection_reason="uncertainty",
                                    suggestion=suggestion, suggestion_hidden=hidden, model_version=model_version,
                                    taxonomy_version=project.current_taxonomy_version)

    items = [ItemFactory(project=project, n_required=2) for _ in range(5)]
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=3, start_rank=0, rows=[
        RankingRow(items[3].pk, 0.5, "uncertainty", 1.0, "spam/scam", 0.6)])
    shown = {"label": "spam/scam", "confidence": 0.7}
    # ann: 4 answers, lead times 1, 3, 2, 10 s; one more lease skipped. Suggestions: shown twice (followed once),
    # withheld twice (one recorded on the lease, one recovered from ranking 3), matched once.
    plan = [(["spam/scam"], 1000, shown, False), (["ok"], 3000, shown, False),
            (["spam/scam"], 2000, {"label": "spam/scam", "confidence": 0.6}, True), (["ok"], 10000, None, True)]
    for item, (labels, ms, suggestion, hidden) in zip(items, plan, strict=False):
        held = lease(item, ann, suggestion=suggestion, hidden=hidden, model_version=3)
        add(project, item, ann, labels, lead_ms=ms, lease=held, model_version=3)
    lease(items[4], ann, state="skipped")
    # bob agrees with ann on items 0 and 2, not on 1.
    for item, labels in ((items[0], ["spam/scam"]), (items[1], ["spam/promo"]), (items[2], ["spam/scam"])):
        add(project, item, bob, labels, lead_ms=4000)
    # Gold: ann 5/5 right, bob 2/6 right (below 0.75 with at least 5 answers), per expected label.
    for i in range(6):
        gold = ItemFactory(project=project, is_gold=True, gold_labels=["ok"] if i % 2 else ["spam/scam"])
        if i < 5:
            add(project, gold, ann, ["x"], reason="gold", gold_correct=True)
        add(project, gold, bob, ["x"], reason="gold", gold_correct=i < 2)

    figures = reviewer_figures(project, now=now)
    rows = {row["reviewer"]: row for row in figures["reviewers"]}
    a = rows["ann"]
    assert (a["annotations"], a["median_seconds"], a["items_per_hour"], a["skipped"], a["skip_rate"]) == (
        9, 2.5, 900.0, 1, 0.2)
    assert (a["consensus_agreement"], a["consensus_compared"]) == (round(2 / 3, 4), 3)
    assert a["suggestions"] == {"shown": 2, "followed": 1, "follow_rate": 0.5, "hidden": 2, "hidden_matched": 1,
                                "hidden_match_rate": 0.5, "automation_bias": 0.0,
                                "automation_bias_low": a["suggestions"]["automation_bias_low"],
                                "automation_bias_high": a["suggestions"]["automation_bias_high"]}
    assert a["suggestions"]["automation_bias_low"] < 0 < a["suggestions"]["automation_bias_high"]
    assert (a["n_gold"], a["gold_accuracy"], a["flagged"]) == (5, 1.0, False)
    b = rows["bob"]
    assert (b["n_gold"], b["gold_accuracy"], b["flagged"]) == (6, round(2 / 6, 4), True)
    assert b["gold_by_label"] == {"ok": {"n": 3, "correct": 1, "accuracy": round(1 / 3, 4)},
                                  "spam/scam": {"n": 3, "correct": 1, "accuracy": round(1 / 3, 4)}}
    assert (b["skip_rate"], b["suggestions"]) == (None, None)
    assert [(alert["reviewer"], alert["accuracy"], alert["n_gold"]) for alert in figures["alerts"]] == [
        ("bob", round(2 / 6, 4), 6)]
    assert figures["alerts"][0]["message"] == ("bob answered 33% of their latest 6 gold items correctly "
                                               "(threshold 75%)")


def test_gold_alert_needs_enough_answers_and_looks_at_the_latest(db: Any, settings: Any) -> None:
    project = make_project(gold_accuracy_threshold=0.5)
    rita = member(project, username="rita", role="reviewer")
    golds = [ItemFactory(project=project, is_gold=True, gold_labels=["ok"]) for _ in range(4)]
    for gold in golds:
        add(project, gold, rita, ["spam/scam"], reason="gold", gold_correct=False)
    assert gold_alerts(project) == []  # 4 wrong answers: fewer than the 5 needed to judge
    settings.SIFT_GOLD_MIN_ANSWERS = 4
    assert [a["reviewer"] for a in gold_alerts(project)] == ["rita"]


def test_queue_health(db: Any) -> None:
    project = make_project()
    rita, otto = member(project, username="rita", role="reviewer"), member(project, username="otto", role="reviewer")
    now = timezone.now()
    items = [ItemFactory(project=project) for _ in range(6)]
    ItemFactory(project=project, is_gold=True)
    add(project, items[0], rita, ["ok"], model_version=4)
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=4, start_rank=0, rows=[
        RankingRow(items[0].pk, 0.9, "uncertainty"), RankingRow(items[1].pk, 0.8, "uncertainty"),
        RankingRow(items[2].pk, 0.1, "exploration", 0.5)])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=4)
    project.refresh_from_db()
    held = Lease.objects.create(project=project, item=items[1], reviewer=rita, expires_at=now + timedelta(minutes=9),
                                selection_reason="uncertainty", model_version=4)
    Lease.objects.filter(pk=held.pk).update(created_at=now - timedelta(minutes=1))
    Lease.objects.create(project=project, item=items[2], reviewer=otto, expires_at=now - timedelta(minutes=1),
                         selection_reason="exploration", model_version=4)
    Adjudication.objects.create(project=project, item=items[0], reason="manual")
    health = queue_health(project, now=now)
    assert (health["items"], health["gold_items"], health["finished"], health["open"]) == (6, 1, 1, 5)
    assert (health["leases_out"], health["leases_expired_unclosed"], health["oldest_lease_seconds"]) == (1, 1, 60.0)
    assert health["ranking"] == {"version": 4, "entries": 3, "open_entries": 2, "consumed_share": round(1 / 3, 4),
                                 "labels_since_served": 1}
    assert (health["answers_last_hour"], health["adjudications_pending"], health["adjudications_decided"]) == (1, 1, 0)


def test_timeline_buckets_agreement_and_distribution(db: Any) -> None:
    project = make_project()
    ann, bob = member(project, username="ann", role="reviewer"), member(project, username="bob", role="reviewer")
    day1, day2 = datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 2, 10, tzinfo=UTC)
    a, b, c = (ItemFactory(project=project) for _ in range(3))
    add(project, a, ann, ["ok"], when=day1)
    add(project, a, bob, ["ok"], when=day1)
    add(project, b, ann, ["spam/scam"], when=day1)
    add(project, b, bob, ["ok"], when=day2)
    add(project, c, ann, ["spam/promo"], when=day2)
    data = timeline(project)
    assert data["bucket"] == "day"
    assert [(r["start"], r["answers"], r["alpha_units"], r["alpha_cumulative_units"]) for r in data["buckets"]] == [
        ("2024-05-01", 3, 1, 1), ("2024-05-02", 2, 1, 2)]
    assert data["buckets"][0]["alpha"] is None  # one unit, one value: undefined
    assert data["buckets"][1]["alpha_cumulative"] == alpha([["ok", "ok"], ["spam/scam", "ok"]])
    assert data["buckets"][0]["labels"] == {"ok": 2, "spam/scam": 1, "spam/promo": 0}
    # Per label, over items completed so far: day 2 has a (ok, ok) and b (scam, ok).
    assert data["buckets"][1]["alpha_by_label_cumulative"] == {
        "ok": alpha([[True, True], [False, True]]), "spam": alpha([[False, False], [True, False]]),
        "spam/scam": alpha([[False, False], [True, False]]), "spam/promo": None}
    # Consensus per item: a -> ok; b -> tie; c -> promo.
    assert data["distribution"] == [
        {"key": "ok", "name": "OK", "items": 1}, {"key": "spam/scam", "name": "Scam", "items": 0},
        {"key": "spam/promo", "name": "Promo", "items": 1}, {"key": "(tie)", "name": "(tie)", "items": 1}]


def test_summary_has_the_contract_sections(db: Any) -> None:
    project, _items = _prevalence_world()
    summary = stats_summary(project)
    assert set(summary) == {"project", "progress", "agreement", "prevalence", "adjudications", "alerts",
                            "by_language", "propagation"}
    assert summary["progress"] == {"items": 10, "gold_items": 1, "finished": 7, "open": 3, "labelled": 7,
                                   "annotations": 8, "reviewers": 1}
    assert summary["prevalence"]["population"] == 10
