"""Query strategies: pure functions from probability arrays to scores, and index-based selection helpers.

Everything here is stateless. A strategy never sees database ids: it gets arrays and returns positions into
them. ``StrategySpec`` names a complete recipe (which score, how much exploitation, diversity, cold start,
exploration) and ``STRATEGIES`` is the registry behind a project's ``strategy`` setting and the CLI's
``--strategy``. ``DEFAULT_STRATEGY`` is what a new project gets; docs/al_curves.md has the measurements that
chose it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from learning.core import modal_adapter
from learning.core._types import Float64Array, FloatArray, IntArray
from learning.core.vocabulary import DEFAULT_ALIAS, StrategyName
from learning.core.vocabulary import DEFAULT_STRATEGY as DEFAULT_STRATEGY

Measure = Literal["least_confidence", "margin", "entropy", "random"]
ColdStart = Literal["diverse", "random"]
ExploitRule = Literal["prevalence", "balance_gate"]

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
    exploitation_share: the most of the model's positions that may go to the items most likely to belong to
                        the rarest class ("exploitation"): it finds rare positives that uncertainty alone
                        reaches slowly. 0 disables. How much of it is used is ``exploit_rule``'s business.
    exploit_rule:       "prevalence" (the default's): the share actually used is
                        ``exploitation_share * (1 - balance)``, where balance = n_seen * (estimated share of the
                        rarest seen class) is 1 for equal classes and falls towards 0 as a class gets rarer
                        (``prevalence_balance``); the rarest class is also the one exploited.
                        "balance_gate" (the previous default's, kept for the bench): the full share while the
                        least-labelled class holds fewer than ``exploit_below_balance`` of an equal share of the
                        labels, else none; the least-labelled class is the one exploited.
    exploit_below_balance: the "balance_gate" threshold.
    diversity_threshold: cosine similarity at or above which a candidate counts as a near-duplicate of an item
                        already in the batch and is passed over; None disables.
    exploration_rate:   share of positions drawn uniformly at random from the unlabelled pool, with recorded
                        inclusion probabilities (Horvitz-Thompson prevalence estimates need them).
    cold_start:         before a model can be fitted: "diverse" (seed-query neighbours, then k-means picks)
                        or "random" (the classic random initial set).
    class_balance:      on a taxonomy of more than two classes, compose each batch across classes: the
                        exploitation picks go round-robin over the seen classes, fewest labels first, each taking
                        its most probable unpicked item (``per_class_top``), and the uncertainty picks go
                        round-robin over the predicted classes, each taking its most uncertain item
                        (``round_robin_by_group``). With two classes it changes nothing.
    seek_share:         the most of the model's positions spent seeking classes that have no label yet, scaled
                        by the share of the taxonomy's classes still unseen (``seeking_share``): near a class's
                        guideline text where the taxonomy has one, else k-means picks from regions no labelled
                        item covers. It fades to 0 once every class has a label (two-class data: after the
                        cold start).
    search_share:       the share of the exploitation picks (two-class and "prevalence" exploitation) that go
                        to the unlabelled items nearest the positives found so far and the seed queries,
                        round-robin: it keeps finding rare positives that do not look like the model's current
                        idea of one (``ranking._with_search``).
    """

    name: str
    measure: Measure
    exploitation_share: float = 0.0
    exploit_rule: ExploitRule = "prevalence"
    exploit_below_balance: float = 0.5
    diversity_threshold: float | None = None
    exploration_rate: float = DEFAULT_EXPLORATION_RATE
    cold_start: ColdStart = "diverse"
    class_balance: bool = False
    seek_share: float = 0.0
    search_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.search_share <= 1.0:
            raise ValueError(f"search_share must be in [0, 1], got {self.search_share}")
        if not 0.0 <= self.seek_share <= 1.0:
            raise ValueError(f"seek_share must be in [0, 1], got {self.seek_share}")
        if not 0.0 <= self.exploitation_share <= 1.0:
            raise ValueError(f"exploitation_share must be in [0, 1], got {self.exploitation_share}")
        if not 0.0 <= self.exploration_rate <= 1.0:
            raise ValueError(f"exploration_rate must be in [0, 1], got {self.exploration_rate}")
        if self.diversity_threshold is not None and not -1.0 <= self.diversity_threshold <= 1.0:
            raise ValueError(f"diversity_threshold must be a cosine in [-1, 1], got {self.diversity_threshold}")
        if self.exploit_rule not in ("prevalence", "balance_gate"):
            raise ValueError(f"exploit_rule must be 'prevalence' or 'balance_gate', got {self.exploit_rule!r}")


DEFAULT_EXPLOITATION_SHARE = 0.5
DEFAULT_DIVERSITY_THRESHOLD = 0.9
DEFAULT_SEEK_SHARE = 0.3
"""At most 30% of the model's positions seek unseen classes, scaled by the share of classes still unseen (R52:
about 0.3 x 40/52 after the cold start); 0 on two-class data once the model can be fitted."""

STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(StrategyName.RANDOM.value, "random", exploration_rate=0.0, cold_start="random"),
        StrategySpec(StrategyName.LEAST_CONFIDENCE.value, "least_confidence"),
        StrategySpec(StrategyName.MARGIN.value, "margin"),
        StrategySpec(StrategyName.ENTROPY.value, "entropy"),
        StrategySpec(
            StrategyName.MARGIN_EXPLOIT.value,
            "margin",
            exploitation_share=DEFAULT_EXPLOITATION_SHARE,
            diversity_threshold=DEFAULT_DIVERSITY_THRESHOLD,
            # Many-class parts (issue #22, docs/al_curves.md "R52"): inert on two classes by construction.
            class_balance=True,
            seek_share=DEFAULT_SEEK_SHARE,
        ),
    )
}
# The names' home is vocabulary.StrategyName (the Django side validates projects against it): a name without a
# spec would be accepted by create_project and then fail every retrain, so refuse to import instead.
if set(STRATEGIES) != set(StrategyName):
    raise RuntimeError(f"strategy specs {sorted(STRATEGIES)} != vocabulary names {sorted(StrategyName)}")

def get_strategy(name: str) -> StrategySpec:
    """Look up a strategy by name; ``"default"`` means ``DEFAULT_STRATEGY``."""
    key = DEFAULT_STRATEGY if name == DEFAULT_ALIAS else name
    try:
        return STRATEGIES[key]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected default or one of {', '.join(STRATEGIES)}") from None


def prevalence_estimate(proba: FloatArray, class_counts: FloatArray | np.ndarray, *, multi_label: bool = False
                        ) -> Float64Array:
    """Each class's estimated share of the unlabelled pool: the model's mean probability over ``proba``'s rows.

    Model-based and biased towards balance (the classifier weights classes equally), but it ranks the classes
    by rarity, which is all the exploitation rule needs, and unlike the labelled counts it does not drift as
    the strategy itself over-samples one class. Classes without a label get 0 (the model cannot predict them).
    Multi-label columns are independent, so each entry is that label's own rate.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    proba = np.asarray(proba)
    if counts.shape != (proba.shape[1],):
        raise ValueError(f"class_counts has shape {counts.shape}, expected ({proba.shape[1]},)")
    pi: Float64Array = proba.mean(axis=0, dtype=np.float64) if proba.shape[0] else np.zeros(counts.shape[0])
    pi[counts <= 0] = 0.0
    if not multi_label and pi.sum() > 0:
        pi = pi / pi.sum()
    return pi


def prevalence_balance(prevalence: Float64Array, class_counts: FloatArray | np.ndarray, *,
                       multi_label: bool = False) -> float:
    """1 for equally common classes, towards 0 as the rarest seen class gets rarer.

    Single-label: n_seen * min_c pi_c over the seen classes (pi renormalised over them). Multi-label: each label
    is its own yes/no question, so 2 * min over seen labels of min(pi, 1 - pi).
    """
    seen = np.asarray(class_counts, dtype=np.float64) > 0
    if multi_label:
        if not seen.any():
            return 1.0
        p = prevalence[seen]
        return float(min(1.0, 2.0 * np.minimum(p, 1.0 - p).min()))
    if seen.sum() < 2:
        return 1.0
    p = prevalence[seen] / max(float(prevalence[seen].sum()), 1e-12)
    return float(min(1.0, seen.sum() * p.min()))


def effective_exploitation_share(
    spec: StrategySpec,
    class_counts: FloatArray | np.ndarray,
    prevalence: Float64Array | None = None,
    *,
    multi_label: bool = False,
) -> float:
    """The exploitation share to use now (see ``StrategySpec.exploit_rule``); 0 with fewer than two classes
    seen. The "prevalence" rule needs ``prevalence`` (``prevalence_estimate``)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    seen = counts[counts > 0]
    if spec.exploitation_share == 0.0 or (seen.shape[0] < 2 and not multi_label) or seen.shape[0] == 0:
        return 0.0
    if spec.exploit_rule == "prevalence":
        if prevalence is None:
            raise ValueError("the 'prevalence' exploitation rule needs a prevalence estimate")
        balance = prevalence_balance(np.asarray(prevalence, dtype=np.float64), counts, multi_label=multi_label)
        return spec.exploitation_share * float(np.clip(1.0 - balance, 0.0, 1.0))
    equal_share = float(seen.sum()) / seen.shape[0]
    return spec.exploitation_share if float(seen.min()) < spec.exploit_below_balance * equal_share else 0.0


def seeking_share(spec: StrategySpec, class_counts: FloatArray | np.ndarray) -> float:
    """The share of model positions to spend seeking unseen classes now: ``spec.seek_share`` x the share of the
    taxonomy's classes (``class_counts`` entries) that have no label yet."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if spec.seek_share == 0.0 or counts.shape[0] == 0:
        return 0.0
    return float(spec.seek_share * float((counts <= 0).sum()) / counts.shape[0])


def per_class_top(proba: FloatArray, candidates: IntArray, class_order: IntArray | Sequence[int], k: int) -> IntArray:
    """Up to ``k`` candidates, round-robin over the classes in ``class_order``: each class's most probable
    candidate (column of ``proba``), then each class's second, ...; an item already taken by an earlier turn is
    skipped. Ties go to the lower pool index. O(C x N) with argpartition, no per-item Python loop."""
    candidates = np.asarray(candidates, dtype=np.int64)
    order = [int(c) for c in class_order]
    k = min(int(k), candidates.shape[0])
    if k <= 0 or not order:
        return np.zeros(0, dtype=np.int64)
    table = np.full((len(order), k), -1, dtype=np.int64)
    for row, c in enumerate(order):
        best = top_k(np.ascontiguousarray(np.asarray(proba)[:, c]), candidates, k)
        table[row, : best.shape[0]] = best
    flat = table.T.reshape(-1)  # column-major: every class's first, then every class's second, ...
    flat = flat[flat >= 0]
    _, first = np.unique(flat, return_index=True)
    out: IntArray = flat[np.sort(first)][:k]
    return out


def round_robin_by_group(
    scores: FloatArray, groups: IntArray, candidates: IntArray, group_order: IntArray | Sequence[int], k: int
) -> IntArray:
    """Up to ``k`` candidates, round-robin over groups: the best-scored candidate of each group in
    ``group_order``, then each group's second best, ... (``groups[i]`` is pool item i's group; groups not in
    ``group_order`` come after those that are, by group id). Ties go to the lower pool index."""
    candidates = np.asarray(candidates, dtype=np.int64)
    k = min(int(k), candidates.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    group = np.asarray(groups, dtype=np.int64)[candidates]
    n_groups = int(max(group.max(initial=0), max((int(g) for g in group_order), default=0))) + 1
    rank = np.full(n_groups, len(group_order), dtype=np.int64) + np.arange(n_groups)
    for r, g in enumerate(group_order):
        rank[int(g)] = r
    cand_scores = np.asarray(scores, dtype=np.float32)[candidates]
    by_group = np.lexsort((candidates, -cand_scores, rank[group]))
    grouped = rank[group][by_group]
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    within = np.arange(grouped.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, grouped.shape[0]]))
    order = np.lexsort((grouped, within))[:k]
    out: IntArray = candidates[by_group[order]]
    return out


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


def minority_scores(proba: FloatArray, class_counts: FloatArray | np.ndarray) -> FloatArray:
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


def rarity_scores(proba: FloatArray, prevalence: Float64Array) -> FloatArray:
    """How likely each row belongs to the rarest classes: sum_c p_c * w_c with w_c ~ 1 / pi_c over the classes
    with an estimated share pi_c > 0 (normalised to sum to 1). With two classes this orders rows by P(rarer
    class): a "most-likely-positive" pick, whichever class happens to have more labels so far."""
    proba = np.asarray(proba, dtype=np.float32)
    pi = np.asarray(prevalence, dtype=np.float64)
    if pi.shape != (proba.shape[1],):
        raise ValueError(f"prevalence has shape {pi.shape}, expected ({proba.shape[1]},)")
    inverse = np.zeros_like(pi)
    present = pi > 0
    inverse[present] = 1.0 / np.maximum(pi[present], 1e-6)
    if not present.any():
        inverse[:] = 1.0
    weights = inverse / inverse.sum()
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


DIVERSITY_BLOCK = 256
"""Candidates the near-duplicate filter examines per step (see diverse_top_k)."""


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

    Vectors are unit-norm, so a dot product is the cosine. If the filter leaves fewer than ``k`` items, the
    passed-over ones fill the rest in their original order: a near-duplicate is still a better question than
    none.

    The walk goes in blocks of DIVERSITY_BLOCK candidates. For each block, one matrix product gives every
    candidate's similarity to the items kept before the block (and to ``already``), and one more the block's
    own Gram matrix; the greedy pass inside the block then only compares numbers. This makes the same decisions
    as comparing each candidate with every kept item one by one, but with two BLAS matrix products per block
    instead of one matrix-vector product over all candidates per kept item, and it never looks at candidates
    past the point where ``k`` items are kept (most of the ``CANDIDATE_FACTOR`` reserve, when duplicates are
    rare). tests/learning/core/test_strategies.py checks it against the one-by-one reference.
    """
    ordered = np.asarray(ordered, dtype=np.int64)
    k = min(int(k), ordered.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    m = ordered.shape[0]
    prior = np.asarray(vectors[already], dtype=np.float32) if already is not None and len(already) > 0 else None
    dim = int(np.asarray(vectors[ordered[:1]]).shape[1])
    kept_vectors = np.empty((k, dim), dtype=np.float32)
    kept: list[int] = []
    for start in range(0, m, DIVERSITY_BLOCK):
        block = np.asarray(vectors[ordered[start : start + DIVERSITY_BLOCK]], dtype=np.float32)
        max_sim = np.full(block.shape[0], -np.inf, dtype=np.float32)
        if prior is not None:
            max_sim = (block @ prior.T).max(axis=1)
        if kept:
            np.maximum(max_sim, (block @ kept_vectors[: len(kept)].T).max(axis=1), out=max_sim)
        gram = block @ block.T
        for b in range(block.shape[0]):
            if max_sim[b] >= threshold:
                continue
            kept_vectors[len(kept)] = block[b]
            kept.append(start + b)
            if len(kept) == k:
                break
            # Later candidates of this block must also be far enough from the one just kept.
            np.maximum(max_sim[b + 1 :], gram[b, b + 1 :], out=max_sim[b + 1 :])
        if len(kept) == k:
            break
    if len(kept) < k:
        chosen = np.zeros(m, dtype=bool)
        chosen[kept] = True
        kept.extend(np.flatnonzero(~chosen)[: k - len(kept)].tolist())
    out: IntArray = ordered[np.array(kept, dtype=np.int64)]
    return out


def random_scores(n: int, rng: np.random.Generator) -> FloatArray:
    """Uniform random scores in [0, 1): ranking by them is passive random sampling."""
    out: FloatArray = rng.random(n, dtype=np.float32)
    return out
