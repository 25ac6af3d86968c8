"""Guideline text as per-class seed vectors (learning/services/guidelines.py) and its hook in the retrain."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from config.celery import app
from labeling.models import RankingEntry
from learning.core.embedders import HashingEmbedder
from learning.services import model_version_train
from learning.services.guidelines import guideline_texts, guideline_vectors
from tests.factories import ProjectFactory, UserFactory
from tests.learning.support import add_items, annotate, embed_items

TAXONOMY = {
    "name": "Abuse",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "Fine", "description": "Ordinary chat between friends", "children": []},
        {"key": "scam", "name": "Scam", "description": "win a free prize cash claim your reward", "children": []},
        {"key": "threat", "name": "Threat", "description": "  ", "children": []},
    ],
}


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: None)


def test_guideline_texts_and_vectors(db: Any) -> None:
    project = ProjectFactory(slug="gl", taxonomy=TAXONOMY, embedder="hashing")
    texts = guideline_texts(taxonomy_version_id=project.current_taxonomy_version_id,
                            leaf_keys=("scam", "threat", "ok", "gone"))
    assert texts == ("Scam: win a free prize cash claim your reward", "", "Fine: Ordinary chat between friends", "")
    vectors = guideline_vectors(texts, HashingEmbedder())
    assert vectors.shape == (4, 384)
    assert [bool(np.abs(row).sum() > 0) for row in vectors] == [True, False, True, False]
    np.testing.assert_allclose(vectors[0], HashingEmbedder().embed([texts[0]])[0], atol=1e-3)


def test_retrain_seeks_an_unseen_class_near_its_guideline(db: Any, settings: Any) -> None:
    settings.SIFT_RANKING_MAX_DEPTH = 10  # a queue shorter than the pool, as in any real project
    project = ProjectFactory(slug="gl2", taxonomy=TAXONOMY, embedder="hashing", strategy="default",
                             exploration_rate=0.0)
    chat = [f"see you at dinner tonight love mum {i} ok" for i in range(20)]
    other = [f"the train is late again sorry {i}" for i in range(20)]
    scams = [f"win a free prize cash now call {i} claim your reward" for i in range(5)]
    items = add_items(project, chat + other + scams)
    embed_items(items)
    reviewer = UserFactory(username="g-oracle")
    for item in items[:3]:
        annotate(item, reviewer, ["ok"])
    for item in items[20:23]:
        annotate(item, reviewer, ["threat"])
    result = model_version_train(project_id=project.pk)
    rows = list(RankingEntry.objects.filter(project=project, ranking_version=result.version).order_by("rank"))
    first = rows[0]
    assert first is not None
    # "scam" has no label yet: the first position seeks it near its guideline text (the exact neighbour rule is
    # tested in tests/learning/core/test_long_tail.py); without guideline text it would be a k-means pick.
    assert first.reason == "seed_query"
    assert first.item_id not in {r.item_id for r in rows[1:]} | {i.pk for i in items[:3] + items[20:23]}
    # share 0.3 x 1/3 unseen classes of 10 positions: one seeking position, the first.
    assert [r.reason for r in rows].count("seed_query") == 1
