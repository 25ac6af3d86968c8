"""GET /api/projects/{slug}/stats/ ``by_language``: progress, agreement, prevalence and model quality per language."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labeling.models import Annotation, Item
from learning.models import ModelVersion
from learning.services.evaluation import MIN_LABELS_PER_GROUP, model_metrics
from tests.factories import ItemFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


def _answer(project: Any, item: Item, reviewer: Any, label: str) -> None:
    Annotation.objects.create(project=project, item=item, reviewer=reviewer, labels=[label],
                              taxonomy_version=project.current_taxonomy_version, selection_reason="exploration",
                              model_version=1, inclusion_probability=0.5)


def seed(cast: dict[str, Any]) -> None:
    """Arabic: two items, both reviewers agree (spam, ham); one Arabic item open. English: one item, the
    reviewers disagree. One item not yet detected."""
    project = cast["project"]
    one, two = cast["users"]["reviewer"], member(project, username="reviewer2", role="reviewer")
    ar_spam = ItemFactory(project=project, text="اربح جائزة الآن", language="ar", n_required=2)
    ar_ham = ItemFactory(project=project, text="نلتقي غدا", language="ar", n_required=2)
    ItemFactory(project=project, text="رسالة أخرى", language="ar", n_required=2)
    en = ItemFactory(project=project, text="see you at noon", language="en", n_required=2)
    ItemFactory(project=project, text="legacy row", language=None, n_required=2)
    for item, first, second in ((ar_spam, "spam", "spam"), (ar_ham, "ham", "ham"), (en, "ham", "spam")):
        _answer(project, item, one, first)
        _answer(project, item, two, second)
        Item.objects.filter(pk=item.pk).update(n_done=2)
    ModelVersion.objects.create(project=project, version=3, status=ModelVersion.Status.ACTIVE, fingerprint="f",
                                metrics={"cv": {"by_language": {"ar": {"n": 40, "macro_f1": 0.9, "accuracy": 0.9,
                                                                       "average_precision": 0.95}}}})


def test_by_language_figures(cast: dict[str, Any], api_as: Any) -> None:
    seed(cast)
    body = api_as(cast["users"]["policy_lead"]).get("/api/projects/sms/stats/").json()
    by_language = body["by_language"]
    assert by_language["model_version"] == 3
    assert [row["language"] for row in by_language["languages"]] == ["ar", "en", "unknown"]
    ar, en, unknown = by_language["languages"]
    assert ar["progress"] == {"items": 3, "finished": 2, "labelled": 2, "open": 1, "annotations": 4}
    assert en["progress"] == {"items": 1, "finished": 1, "labelled": 1, "open": 0, "annotations": 2}
    assert unknown["progress"] == {"items": 1, "finished": 0, "labelled": 0, "open": 1, "annotations": 0}
    # Arabic: two units, each agreed, on different values: alpha 1. English: the one unit (ham, spam) gives
    # D_o = D_e = 1 (two values, one pair each way): alpha 1 - 1 = 0.
    assert ar["agreement"] == {"alpha": 1.0, "n_units": 2}
    assert en["agreement"] == {"alpha": 0.0, "n_units": 1}
    assert unknown["agreement"] == {"alpha": None, "n_units": 0}
    assert ar["model"] == {"n": 40, "macro_f1": 0.9, "accuracy": 0.9, "average_precision": 0.95}
    assert en["model"] is None
    # Prevalence per language, the language as its own population: Arabic 3 items, 2 labelled, 1 spam.
    ar_spam = next(row for row in ar["prevalence"]["labels"] if row["key"] == "spam")
    assert ar["prevalence"]["population"] == 3
    assert ar_spam["naive"] == 0.5
    assert ar_spam["low"] <= ar_spam["estimate"] <= ar_spam["high"]
    en_spam = next(row for row in en["prevalence"]["labels"] if row["key"] == "spam")
    # English is a census (its one item is labelled): half the answers say spam.
    assert (en_spam["estimate"], en_spam["low"], en_spam["high"]) == (0.5, 0.5, 0.5)
    # The project-wide keys are unchanged beside it.
    assert body["progress"]["items"] == 5


def test_model_metrics_score_each_language_with_enough_labels() -> None:
    rng = np.random.default_rng(0)
    n = 2 * MIN_LABELS_PER_GROUP + 6
    labels = ["spam" if i % 2 else "ham" for i in range(n)]
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[:, 0] += np.where(np.array(labels) == "spam", 3.0, -3.0)  # separable on one axis
    groups = ["ar"] * MIN_LABELS_PER_GROUP + ["en"] * MIN_LABELS_PER_GROUP + ["hi"] * 5 + [None]
    out = model_metrics(X, labels, classes=["ham", "spam"], multi_label=False, sampled=np.zeros(n, dtype=bool),
                        inclusion=np.ones(n), random_state=0, groups=groups)
    by_language = out["cv"]["by_language"]
    assert sorted(by_language) == ["ar", "en"]  # hi has 5 labels: too few
    assert by_language["ar"]["n"] == by_language["en"]["n"] == MIN_LABELS_PER_GROUP
    assert by_language["ar"]["average_precision"] == 1.0
