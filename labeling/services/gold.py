"""Gold mixing: which gold item (if any) a reviewer's next checkout serves, and how it is disguised.

Gold items (imported with ``--gold``) carry their expected answer in ``Item.gold_labels``. The queue
checkout asks ``gold_pick`` first; with probability ``Project.gold_rate`` it returns a gold item this
reviewer has never been shown (no lease, no annotation), chosen at random. The annotation service scores
the answer (``Annotation.gold_correct``) and labeling/selectors/quality.py turns those scores into
per-label accuracy and the lead's alert.

A gold check must look like any other item. If it stood out, reviewers would take extra care only on
those and the check would measure nothing. Gold items are therefore never in the ranking (the learning
side leaves them out of the pool) and a gold lease copies its visible selection facts from a real
*exploration* pick of the active ranking: its score, ranking version, inclusion probability and model
suggestion. Exploration picks are uniform random items, so "a random item with these facts" is exactly
what a gold item looks like. Before the first ranking a gold lease looks like the random fallback order.
The cover's suggestion belongs to another item and is independent of the gold answer, so it cannot leak
it; the queue's usual hold-out draw applies to it, and the reviewer stats leave gold leases out of the
suggestion-follow rate.

What is stored: the lease (and the annotation copied from it) records ``selection_reason = "gold"`` and
the cover's score, model version and inclusion probability. For a gold lease those three columns describe
the disguise, not a sampling design: nothing estimates anything from them (gold items are outside the
prevalence population). ``gold_public_selection`` is what the API shows instead of the stored reason.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Value
from django.db.models.functions import Coalesce

from labeling.models import Annotation, Item, Lease, Project, RankingEntry, SelectionReason

# Exploration picks are the best cover; rankings built with exploration_rate = 0 have none, and then a
# model pick (inclusion probability 1) is the next most common thing a reviewer sees.
_COVER_REASONS = (SelectionReason.EXPLORATION, SelectionReason.UNCERTAINTY)


@dataclass(frozen=True, slots=True)
class GoldPick:
    """A gold item to lease, with the selection facts the lease records (the disguise, see module doc)."""

    item_id: int
    score: float | None = None
    model_version: int | None = None
    inclusion_probability: float | None = None
    suggested_label: str = ""
    suggested_confidence: float | None = None
    reason: str = SelectionReason.GOLD.value


def _unseen_gold(project: Project, reviewer_id: int) -> Any:
    # Both probes are indexed: lease_reviewer_item (reviewer_id, item_id) and the unique (item, reviewer)
    # constraint of annotations. The gold partial index item_gold_random serves the scan.
    seen_lease = Lease.objects.filter(item_id=OuterRef("pk"), reviewer_id=reviewer_id)
    seen_answer = Annotation.objects.filter(item_id=OuterRef("pk"), reviewer_id=reviewer_id)
    return (Item.objects.filter(project_id=project.pk, is_gold=True)
            .exclude(Exists(seen_lease)).exclude(Exists(seen_answer)))


def _random_unseen_gold(project: Project, reviewer_id: int, rng: random.Random,
                        languages: Sequence[str] | None = None) -> int | None:
    """A random unseen gold item: the first one at or after a random point on the random_key circle.

    Item.random_key is an independent uniform draw per item, so starting at a uniform point and taking
    the next key (wrapping around) picks each unseen gold item with probability equal to the gap before
    its key: random, and two index probes instead of counting the gold set.
    """
    start = rng.random()
    unseen = _unseen_gold(project, reviewer_id)
    if languages is not None:  # the reviewer's languages (labeling/services/reviewer_languages.py)
        unseen = unseen.alias(language_or_undetermined=Coalesce("language", Value(""))).filter(
            language_or_undetermined__in=list(languages))
    found: int | None = unseen.filter(random_key__gte=start).order_by("random_key").values_list("id", flat=True).first()
    if found is None:
        found = unseen.filter(random_key__lt=start).order_by("random_key").values_list("id", flat=True).first()
    return found


def _cover(project: Project, rng: random.Random) -> dict[str, Any]:
    """Selection facts copied from a random exploration (else model) pick of the active ranking.

    A ranking may hold the whole pool (200k positions), so the pick is not loaded and chosen in Python: a random
    rank is drawn and the first entry of the wanted reason at or after it (wrapping around) is read through
    the (project, ranking_version, rank) index. Exploration positions are evenly spaced, so that is a short
    walk.
    """
    version = project.active_ranking_version
    if version is None:
        return {}
    entries = RankingEntry.objects.filter(project_id=project.pk, ranking_version=version)
    last = entries.order_by("-rank").values_list("rank", flat=True).first()
    if last is None:
        return {}
    start = rng.randint(0, last)
    fields = ("score", "inclusion_probability", "suggested_label", "suggested_confidence")
    for reason in _COVER_REASONS:
        same = entries.filter(reason=reason)
        row = (same.filter(rank__gte=start).order_by("rank").values_list(*fields).first()
               or same.filter(rank__lt=start).order_by("rank").values_list(*fields).first())
        if row is not None:
            score, inclusion, label, confidence = row
            return {"score": score, "model_version": version, "inclusion_probability": inclusion,
                    "suggested_label": label or "", "suggested_confidence": confidence}
    return {}


def gold_pick(*, project: Project, reviewer: AbstractBaseUser, rng: random.Random,
              languages: Sequence[str] | None = None) -> GoldPick | None:
    """The gold item this checkout should serve, or None to carry on with the ordinary queue.

    With probability ``project.gold_rate`` (one ``rng`` draw per call) and while the reviewer has unseen
    gold items left. Call it inside the checkout transaction, after the reviewer's membership lock: that
    lock serialises one reviewer's checkouts, so two tabs cannot both be given the same gold item.
    """
    if project.gold_rate <= 0.0 or rng.random() >= project.gold_rate:
        return None
    item_id = _random_unseen_gold(project, reviewer.pk, rng, languages)
    if item_id is None:
        return None
    return GoldPick(item_id=item_id, **_cover(project, rng))


def gold_public_selection(lease: Lease) -> dict[str, Any]:
    """What the API shows as ``selection`` for a gold lease: the cover recorded by ``gold_pick``.

    Exploration covers carry an inclusion probability below 1 and read "exploration"; model-pick covers
    (probability 1) read "uncertainty"; with no ranking it reads like the random fallback order.
    """
    if lease.model_version is None:
        return {"reason": SelectionReason.FALLBACK_RANDOM.value, "score": None, "model_version": None,
                "inclusion_probability": None}
    inclusion = lease.inclusion_probability
    reason = SelectionReason.EXPLORATION if inclusion is not None and inclusion < 1.0 else SelectionReason.UNCERTAINTY
    return {"reason": reason.value, "score": lease.selection_score, "model_version": lease.model_version,
            "inclusion_probability": inclusion}
