"""Query strategies: pure functions from probability arrays to scores, and index-based selection helpers.

Everything here is stateless. A strategy never sees database ids: it gets arrays and returns positions into
them. ``StrategySpec`` names a complete recipe (which score, how much exploitation, diversity, cold start,
exploration) and ``STRATEGIES`` is the registry behind a project's ``strategy`` setting and the CLI's
``--strategy``. ``DEFAULT_STRATEGY`` is what a new project gets; docs/al_curves.md has the measurements that
chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from learning.core import modal_adapter
from learning.core._types import FloatArray, IntArray

Measure = Literal["least_confidence", "margin", "entropy", "random"]
ColdStart = Literal["diverse", "random"]

DEFAULT_EXPLORATION_RATE = 0.1
"""Share of ranked positions filled by uniform random draws from the unlabelled pool (prevalence estimation)."""

DIVERSITY_WINDOW = 500
"""The near-duplicate filter applies to the first this-many model picks: the ones reviewers see before the next
retrain replaces the ranking. Beyond the window the order is by score alone, which keeps ranking linear-time."""

CANDIDATE_FACTOR = 5
"""How many top-scored candidates per wanted position the diversity filter may look through."""


@dataclass(frozen=True)
class StrategySpec:
    """A complete query recipe.

    measure:            the uncertainty score for "uncertainty" positions, or "random" for passive sampling.
    exploitation_share: share of model positions given to the items most likely to belong to the class with
                        the fewest labels so far ("exploitation"): finds rare positives that uncertainty alone
                        reaches slowly. 0 disables.
    exploit_below_balance: exploitation positions are used only while the imbalance is real: the least-labelled
                        class (among those seen) holds fewer than this fraction of an equal share of the labels
                        (n_min < fraction * n_labelled / n_seen_classes). On balanced multi-class data
                        exploitation only pulls the batch away from the decision boundaries (docs/al_curves.md).
    diversity_threshold: cosine similarity at or above which a candidate counts as a near-duplicate of an item
                        already in the batch and is passed over; None disables.
    exploration_rate:   share of positions drawn uniformly at random from the unlabelled pool, with recorded
                        inclusion probabilities (Horvitz-Thompson prevalence estimates need them).
    cold_start:         before a model can be fitted: "diverse" (seed-query neighbours, then k-means picks)
                        or "random" (the classic random initial set).
    """

    name: str
    measure: Measure
    exploitation_share: float = 0.0
    exploit_below_balance: float = 0.5
    diversity_threshold: float | None = None
    exploration_rate: float = DEFAULT_EXPLORATION_RATE
    cold_start: ColdStart = "diverse"

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploitation_share <= 1.0:
            raise ValueError(f"exploitation_share must be in [0, 1], got {self.exploitation_share}")
        if not 0.0 <= self.exploration_rate <= 1.0:
            raise ValueError(f"exploration_rate must be in [0, 1], got {self.exploration_rate}")
        if self.diversity_threshold is not None and not -1.0 <= self.diversity_threshold <= 1.0:
            raise ValueError(f"diversity_threshold must be a cosine in [-1, 1], got {self.diversity_threshold}")


DEFAULT_EXPLOITATION_SHARE = 0.3
DEFAULT_DIVERSITY_THRESHOLD = 0.9

STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("random", "random", exploration_rate=0.0, cold_start="random"),
        StrategySpec("least_confidence", "least_confidence"),
        StrategySpec("margin", "margin"),
        StrategySpec("entropy", "entropy"),
        StrategySpec(
            "margin_exploit",
            "margin",
            exploitation_share=DEFAULT_EXPLOITATION_SHARE,
            diversity_threshold=DEFAULT_DIVERSITY_THRESHOLD,
        ),
    )
}

DEFAULT_STRATEGY = "margin_exploit"
"""The strategy a new project uses, and what ``--strategy default`` resolves to."""


def get_strategy(name: str) -> StrategySpec:
    """Look up a strategy by name; ``"default"`` means ``DEFAULT_STRATEGY``."""
    key = DEFAULT_STRATEGY if name == "default" else name
    try:
        return STRATEGIES[key]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected default or one of {', '.join(STRATEGIES)}") from None


def effective_exploitation_share(spec: StrategySpec, class_counts: FloatArray | np.ndarray) -> float:
    """The exploitation share to use given the labels so far: ``spec.exploitation_share`` while the least-labelled
    seen class is below ``exploit_below_balance`` of an equal share, else 0."""
    counts = np.asarray(class_counts, dtype=np.float64)
    seen = counts[counts > 0]
    if spec.exploitation_share == 0.0 or seen.shape[0] < 2:
        return 0.0
    equal_share = float(seen.sum()) / seen.shape[0]
    return spec.exploitation_share if float(seen.min()) < spec.exploit_below_balance * equal_share else 0.0


def _binary_columns_uncertainty(proba: FloatArray, measure: Measure) -> FloatArray:
    """Per-label uncertainty for independent yes/no columns (multi-label), aggregated by max over labels."""
    p = np.clip(proba, 0.0, 1.0)
    if measure == "least_confidence":
        per_label = np.minimum(p, 1.0 - p)
    elif measure == "margin":
        per_label = 1.0 - np.abs(2.0 * p - 1.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            per_label = -(p * np.log(p) + (1.0 - p) * np.log(1.0 - p))
        per_label = np.nan_to_num(per_label, nan=0.0)
    out: FloatArray = per_label.max(axis=1).astype(np.float32)
    return out


def uncertainty_scores(proba: FloatArray, measure: Measure, *, multi_label: bool = False) -> FloatArray:
    """Uncertainty per row (larger = ask first). Single-label rows go through the modAL adapter.

    For two classes, least confidence, margin and entropy are monotone transforms of each other, so they rank
    identically; they differ from three classes on.
    """
    proba = np.asarray(proba, dtype=np.float32)
    if measure == "random":
        raise ValueError("'random' has no uncertainty score; use random_scores")
    if multi_label:
        return _binary_columns_uncertainty(proba, measure)
    if measure == "least_confidence":
        return modal_adapter.least_confidence(proba)
    if measure == "margin":
        return modal_adapter.margin(proba)
    if measure == "entropy":
        return modal_adapter.entropy(proba)
    raise ValueError(f"unknown uncertainty measure {measure!r}")


def minority_scores(proba: FloatArray, class_counts: FloatArray) -> FloatArray:
    """How likely each row belongs to the classes with the fewest labels: sum_c p_c * w_c, w_c ~ 1 / n_c.

    The weights are normalised to sum to 1, so the score is a probability-like number in [0, 1]. With a rare
    positive class (n_pos << n_neg) this is nearly P(positive): a "most-likely-positive" pick. A class with no
    labels yet gets the weight of a class with one (the model cannot predict it anyway).
    Works for single-label rows and for independent multi-label columns alike.
    """
    proba = np.asarray(proba, dtype=np.float32)
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    if counts.shape != (proba.shape[1],):
        raise ValueError(f"class_counts has shape {counts.shape}, expected ({proba.shape[1]},)")
    weights = (1.0 / counts) / np.sum(1.0 / counts)
    out: FloatArray = (proba @ weights.astype(np.float32)).astype(np.float32)
    return out


def top_k(scores: FloatArray, candidates: IntArray, k: int) -> IntArray:
    """The ``k`` candidates with the highest scores, best first; ties go to the lower pool index.

    O(n) selection with argpartition, then a sort of the k winners only: this is what keeps ranking a
    million-item pool within a second.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    k = min(int(k), candidates.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    cand_scores = np.asarray(scores, dtype=np.float32)[candidates]
    if k < candidates.shape[0]:
        # Take a few more than k so that ties at the boundary resolve by index, not by partition order.
        part = np.argpartition(-cand_scores, k - 1)[:k]
        kth = cand_scores[part].min()
        part = np.flatnonzero(cand_scores >= kth)
    else:
        part = np.arange(candidates.shape[0])
    order = np.lexsort((candidates[part], -cand_scores[part]))[:k]
    out: IntArray = candidates[part][order]
    return out


def diverse_top_k(
    vectors: FloatArray,
    ordered: IntArray,
    k: int,
    threshold: float,
    *,
    already: IntArray | None = None,
) -> IntArray:
    """Greedy near-duplicate filter: walk ``ordered`` (best first) and keep an item only if its cosine
    similarity to every item kept so far (and to ``already``) is below ``threshold``.

    Vectors are unit-norm, so a dot product is the cosine. Each kept item costs one (m, d) mat-vec over the m
    candidates, so the cost is O(k * m * d) with m = len(ordered), bounded by CANDIDATE_FACTOR * window.
    If the filter leaves fewer than ``k`` items, the passed-over ones fill the rest in their original order:
    a near-duplicate is still a better question than none.
    """
    ordered = np.asarray(ordered, dtype=np.int64)
    k = min(int(k), ordered.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.asarray(vectors[ordered], dtype=np.float32)
    max_sim = np.full(ordered.shape[0], -np.inf, dtype=np.float32)
    if already is not None and len(already) > 0:
        max_sim = (cand @ np.asarray(vectors[already], dtype=np.float32).T).max(axis=1)
    kept: list[int] = []
    pointer = 0
    while len(kept) < k and pointer < ordered.shape[0]:
        # Similarities only grow as items are kept, so a candidate passed over once stays passed over and the
        # pointer never moves back.
        free = np.flatnonzero(max_sim[pointer:] < threshold)
        if free.shape[0] == 0:
            break
        i = pointer + int(free[0])
        kept.append(i)
        np.maximum(max_sim, cand @ cand[i], out=max_sim)
        pointer = i + 1
    if len(kept) < k:
        chosen = np.zeros(ordered.shape[0], dtype=bool)
        chosen[kept] = True
        kept.extend(np.flatnonzero(~chosen)[: k - len(kept)].tolist())
    out: IntArray = ordered[np.array(kept, dtype=np.int64)]
    return out


def random_scores(n: int, rng: np.random.Generator) -> FloatArray:
    """Uniform random scores in [0, 1): ranking by them is passive random sampling."""
    out: FloatArray = rng.random(n, dtype=np.float32)
    return out
