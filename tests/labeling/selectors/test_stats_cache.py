"""The stats cache (labeling/selectors/quality.py, "The stats cache"): a repeated read is served from the cache
with the same body, and every write that moves a figure (submit, undo, adjudication decision, import) makes
the next read recompute."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import pytest
from django.core.cache import cache

from labeling.models import Adjudication
from labeling.selectors import quality as selectors_quality
from labeling.services.adjudication import adjudication_decide
from labeling.services.annotations import annotation_submit, annotation_undo
from labeling.services.items_import import items_import
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

NAMES = ["summary", "agreement", "reviewers", "prevalence", "timeline"]
PATHS = {"summary": "stats/", "agreement": "stats/agreement", "reviewers": "stats/reviewers",
         "prevalence": "stats/prevalence", "timeline": "stats/timeline"}


@pytest.fixture(autouse=True)
def computed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts real computations (the figures are still the real functions' output)."""
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    calls: Counter[str] = Counter()
    real = dict(selectors_quality.CACHED_FIGURES)

    def counting(name: str) -> Any:
        def compute(project: Any) -> Any:
            calls[name] += 1
            return real[name](project)
        return compute

    for name in NAMES:
        monkeypatch.setitem(selectors_quality.CACHED_FIGURES, name, counting(name))
    cache.clear()
    return calls


def read_all(client: Any) -> dict[str, Any]:
    out = {}
    for name in NAMES:
        response = client.get(f"/api/projects/sms/{PATHS[name]}")
        assert response.status_code == 200, response.content
        out[name] = response.json()
    return out


def test_repeated_reads_hit_the_cache_and_writes_invalidate(cast: dict[str, Any], api_as: Any,
                                                           computed: Counter[str]) -> None:
    project, reviewer = cast["project"], cast["users"]["reviewer"]
    ItemFactory.create_batch(3, project=project)
    lead = api_as(cast["users"]["policy_lead"])
    first = read_all(lead)
    assert first["summary"]["progress"] == {"items": 3, "gold_items": 0, "finished": 0, "open": 3, "labelled": 0,
                                            "annotations": 0, "reviewers": 0}
    assert read_all(lead) == first
    assert computed == Counter(dict.fromkeys(NAMES, 1))  # the second round came from the cache

    # A checkout (a lease, no answer) moves no cached figure, so it does not invalidate: a busy queue would
    # otherwise recompute everything after every next-item.
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    assert read_all(lead) == first
    assert computed == Counter(dict.fromkeys(NAMES, 1))
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"])
    after_submit = read_all(lead)
    assert after_submit["summary"]["progress"] == {"items": 3, "gold_items": 0, "finished": 1, "open": 2,
                                                   "labelled": 1, "annotations": 1, "reviewers": 1}
    assert computed == Counter(dict.fromkeys(NAMES, 2))
    assert [r["annotations"] for r in after_submit["reviewers"]["reviewers"]] == [1]

    # Undoing the only answer returns every fingerprinted input to its first state (answer ids are never
    # reused, so (count, newest id) names one set of answers): the first figures are served again, and they are
    # the right ones.
    annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert read_all(lead) == first
    assert computed == Counter(dict.fromkeys(NAMES, 2))
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ham"])
    assert read_all(lead)["summary"]["progress"]["annotations"] == 1
    assert computed == Counter(dict.fromkeys(NAMES, 3))

    summary = items_import(actor=None, project=project, source=io.BytesIO(b'{"external_id": "n1", "text": "new"}\n'),
                           filename="n.jsonl")
    assert summary.created == 1
    assert read_all(lead)["summary"]["progress"]["items"] == 4
    assert computed == Counter(dict.fromkeys(NAMES, 4))


def test_a_decision_invalidates(cast: dict[str, Any], api_as: Any, computed: Counter[str]) -> None:
    project = cast["project"]
    item = ItemFactory(project=project, external_id="d1")
    adjudication = Adjudication.objects.create(project=project, item=item, reason="disagreement")
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.get("/api/projects/sms/stats/").json()["adjudications"] == {"pending": 1, "decided": 0}
    adjudication_decide(actor=cast["users"]["policy_lead"], project=project, adjudication_id=adjudication.pk,
                        labels=["ham"], note="", revise=False)
    assert lead.get("/api/projects/sms/stats/").json()["adjudications"] == {"pending": 0, "decided": 1}
    assert computed["summary"] == 2
