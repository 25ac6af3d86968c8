"""Rank an unlabelled pool: the function the retrain worker calls and the simulation replays.

INVARIANTS (tests/learning/core/test_ranking_properties.py checks them with hypothesis):

- ``indices`` are unique positions into the pool, never a labelled position, and there are exactly
  ``min(depth, n_unlabelled)`` of them;
- exploration positions are laid out evenly with a phase ``u`` in [0, 1): among the first ``j`` positions,
  ``floor(j * rate + u)`` are exploration (``floor(j * rate)`` or one more), and the whole ranking holds
  ``m = floor(depth * rate + u)`` of them. ``u`` is drawn uniformly from ``random_state`` unless given, so a
  prefix of ``j`` positions holds exactly ``j * rate`` exploration items *in expectation* whatever ``j`` is.
  Without the random phase the slots sit at 9, 19, 29 (rate 0.1), and reviewers who only ever consume the
  first few positions of each ranking before the next retrain replaces it would never meet one (the worker
  end-to-end test saw 0 of 180 leases before the phase was randomised);
- the exploration items are a simple random sample, without replacement, of *all* N unlabelled items, drawn
  before the strategy picks anything (the strategy then fills the other positions from what is left). So, given
  the phase, their inclusion probability is exactly m / N whatever the model does, and the first j exploration
  items of any prefix are themselves a simple random sample (inclusion j / N): prevalence over the unlabelled
  pool is estimated without bias by Horvitz-Thompson over exploration items only
  (metrics.horvitz_thompson_total); conditionally unbiased for every phase means unbiased;
- every other position is chosen with certainty given the inputs, and records inclusion probability 1.0;
  only positions whose reason is in ``vocabulary.SAMPLE_REASONS`` ("exploration", "random") belong to the
  probability sample;
- the same inputs and ``random_state`` give the same ranking, bit for bit.

Cost: O(N) numpy work (masks, scores, argpartition) plus an O(window * candidates * d) diversity filter; no
Python loop runs per pool item. A 1M x 384 pool ranks in about a second on two cores (bench/ and tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from learning.core import cold_start
from learning.core._types import Float64Array, FloatArray, IntArray, RandomState, as_generator
from learning.core.strategies import (
    CANDIDATE_FACTOR,
    DEFAULT_STRATEGY,
    DIVERSITY_WINDOW,
    StrategySpec,
    diverse_top_k,
    effective_exploitation_share,
    get_strategy,
    minority_scores,
    per_class_top,
    prevalence_estimate,
    rarity_scores,
    round_robin_by_group,
    seeking_share,
    top_k,
    uncertainty_scores,
)
from learning.core.vocabulary import RANKING_REASONS, Reason

DEFAULT_DEPTH = 1000
"""Ranked positions the worker writes per retrain: far more than reviewers label before the next one."""

REASONS: tuple[str, ...] = tuple(r.value for r in RANKING_REASONS)
"""The fixed vocabulary of ``Ranking.reasons`` (shown to reviewers and stored with each annotation); its home is
learning/core/vocabulary.py, which the Django side reads too."""

_REASON_DTYPE = f"<U{max(len(r) for r in REASONS)}"
"""Wide enough for every reason: a fixed-width numpy string silently truncates a longer one."""


class EmptyPool(ValueError):
    """The pool holds no items at all."""


class PoolExhausted(ValueError):
    """Every item in the pool is already labelled: nothing is left to rank."""


@dataclass(frozen=True)
class Ranking:
    """A queue order over pool positions. All arrays have the same length, in queue order."""

    indices: IntArray
    scores: FloatArray
    reasons: np.ndarray
    inclusion_probabilities: Float64Array

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def exploration_slots(depth: int, rate: float, phase: float = 0.0) -> np.ndarray:
    """Boolean mask of exploration positions: position i is one iff
    floor((i+1) * rate + phase) > floor(i * rate + phase), for a phase in [0, 1)."""
    if not 0.0 <= phase < 1.0:
        raise ValueError(f"phase must be in [0, 1), got {phase}")
    i = np.arange(depth, dtype=np.float64)
    # The small epsilon keeps rates like 0.1 from losing a slot to floating-point rounding (0.1 * 10 < 1).
    eps = 1e-9
    mask: np.ndarray = np.floor((i + 1.0) * rate + phase + eps) > np.floor(i * rate + phase + eps)
    return mask


def leading_slots(n: int, share: float) -> np.ndarray:
    """Boolean mask giving an even ``share`` of n positions, starting with position 0:
    position i is chosen iff ceil((i+1) * share) > ceil(i * share)."""
    i = np.arange(n, dtype=np.float64)
    eps = 1e-9
    mask: np.ndarray = np.ceil((i + 1.0) * share - eps) > np.ceil(i * share - eps)
    return mask


def _interleave(first: IntArray, second: IntArray, share_first: float, n: int) -> tuple[IntArray, np.ndarray]:
    """Merge two ordered lists so that ``first`` takes an even ``share_first`` of positions, position 0 included
    (when one list runs short the other fills in). Returns the merged list and the mask of ``first`` positions."""
    want = leading_slots(n, share_first) if share_first > 0 else np.zeros(n, dtype=bool)
    n_first = min(int(want.sum()), first.shape[0])
    n_second = min(n - n_first, second.shape[0])
    n_first = min(n - n_second, first.shape[0])
    total = n_first + n_second
    from_first = want[:total].copy()
    have = int(from_first.sum())
    if have > n_first:
        from_first[np.flatnonzero(from_first)[n_first:]] = False
    elif have < n_first:
        from_first[np.flatnonzero(~from_first)[::-1][: n_first - have]] = True
    merged = np.empty(total, dtype=np.int64)
    merged[from_first] = first[:n_first]
    merged[~from_first] = second[:n_second]
    return merged, from_first


def _pick(
    vectors: FloatArray,
    scores: FloatArray,
    candidates: IntArray,
    k: int,
    threshold: float | None,
    already: IntArray | None,
) -> IntArray:
    """Top ``k`` candidates by score, with the near-duplicate filter over the first DIVERSITY_WINDOW picks."""
    if threshold is None or k == 0:
        return top_k(scores, candidates, k)
    window = min(k, DIVERSITY_WINDOW)
    pool = top_k(scores, candidates, min(candidates.shape[0], max(k, window * CANDIDATE_FACTOR)))
    head = diverse_top_k(vectors, pool[: window * CANDIDATE_FACTOR], window, threshold, already=already)
    if k == window:
        return head
    rest_mask = np.ones(pool.shape[0], dtype=bool)
    rest_mask[np.isin(pool, head)] = False
    return np.concatenate([head, pool[rest_mask][: k - window]])


def rank_pool(
    vectors: FloatArray,
    *,
    labelled_indices: Sequence[int] | IntArray,
    strategy: str | StrategySpec = DEFAULT_STRATEGY,
    proba: FloatArray | None = None,
    class_counts: Sequence[float] | np.ndarray | None = None,
    multi_label: bool = False,
    seed_vectors: FloatArray | None = None,
    exploration_rate: float | None = None,
    exploration_phase: float | None = None,
    depth: int = DEFAULT_DEPTH,
    random_state: RandomState = None,
    class_vectors: FloatArray | None = None,
) -> Ranking:
    """Rank the unlabelled part of a pool.

    vectors:          (N, d) float32 unit-norm pool vectors; positions are the pool's item order.
    labelled_indices: positions already labelled (never returned).
    strategy:         a registry name (``"default"`` allowed) or a StrategySpec.
    proba:            (N, C) probabilities of a fitted model for every pool position, or None before the
                      cold-start rule allows a model (then the cold start ranks).
    class_counts:     labels per proba column so far; needed when the strategy has an exploitation share.
    multi_label:      proba columns are independent yes/no probabilities.
    seed_vectors:     (s, d) embedded seed queries/examples for the cold start.
    exploration_rate: share of uniform random positions; None uses the strategy's own (0.1 by default).
    exploration_phase: where the evenly spaced exploration slots start (see exploration_slots), in [0, 1);
                      None draws it uniformly from ``random_state`` (what the worker and simulation do).
    depth:            how many positions to produce (fewer if fewer items are unlabelled).
    random_state:     seed or Generator for every random choice (exploration draws, k-means, random fill).
    class_vectors:    (C, d) embedded guideline text per proba column (all-zero rows for classes without one):
                      where the strategy seeks unseen classes (``seek_share``), it looks near these first.
    """
    spec = get_strategy(strategy) if isinstance(strategy, str) else strategy
    rate = spec.exploration_rate if exploration_rate is None else float(exploration_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"exploration_rate must be in [0, 1], got {rate}")
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    vectors = np.asarray(vectors)
    n_pool = int(vectors.shape[0])
    if n_pool == 0:
        raise EmptyPool("the pool is empty")
    labelled = np.unique(np.asarray(labelled_indices, dtype=np.int64))
    if labelled.shape[0] and (labelled[0] < 0 or labelled[-1] >= n_pool):
        raise IndexError(f"labelled index out of range for a pool of {n_pool}")
    if proba is not None and proba.shape[0] != n_pool:
        raise ValueError(f"proba has {proba.shape[0]} rows, the pool has {n_pool}")
    is_unlabelled = np.ones(n_pool, dtype=bool)
    is_unlabelled[labelled] = False
    unlabelled = np.flatnonzero(is_unlabelled).astype(np.int64)
    n_unlabelled = int(unlabelled.shape[0])
    if n_unlabelled == 0:
        raise PoolExhausted(f"all {n_pool} pool items are labelled")
    n = min(int(depth), n_unlabelled)
    rng = as_generator(random_state)

    if spec.measure == "random" or (proba is None and spec.cold_start == "random"):
        # Passive sampling (or the classic random initial set): the whole ranking is one simple random sample
        # of the unlabelled pool, so every position is in the probability sample with inclusion n / N.
        picks = rng.choice(unlabelled, size=n, replace=False).astype(np.int64)
        reasons = np.full(n, Reason.RANDOM.value, dtype=_REASON_DTYPE)
        return Ranking(picks, np.zeros(n, dtype=np.float32), reasons, np.full(n, n / n_unlabelled))

    phase = float(rng.random()) if exploration_phase is None else float(exploration_phase)
    slot_is_exploration = exploration_slots(n, rate, phase)
    m = int(slot_is_exploration.sum())
    explore = rng.choice(unlabelled, size=m, replace=False).astype(np.int64) if m else np.zeros(0, np.int64)
    remaining_mask = is_unlabelled.copy()
    remaining_mask[explore] = False
    remaining = np.flatnonzero(remaining_mask).astype(np.int64)
    n_model = n - m

    model_scores: FloatArray | None = None
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float32)
        model_scores = uncertainty_scores(proba, spec.measure, multi_label=multi_label)

    if proba is None:
        picks, pick_scores, pick_reasons = _cold_start_positions(
            vectors, remaining, labelled, n_model, spec, seed_vectors, rng
        )
    else:
        assert model_scores is not None
        picks, pick_scores, pick_reasons = _model_positions(
            vectors, proba, model_scores, remaining, n_model, spec, class_counts, multi_label,
            labelled=labelled, seed_vectors=seed_vectors,
        )  # fmt: skip
        if spec.seek_share > 0 and class_counts is not None:
            picks, pick_scores, pick_reasons = _with_seeking(
                vectors, picks, pick_scores, pick_reasons, remaining, labelled, spec, class_counts, class_vectors, rng
            )

    indices = np.empty(n, dtype=np.int64)
    scores = np.zeros(n, dtype=np.float32)
    reasons = np.empty(n, dtype=_REASON_DTYPE)
    inclusion = np.ones(n, dtype=np.float64)
    indices[slot_is_exploration] = explore
    reasons[slot_is_exploration] = Reason.EXPLORATION.value
    inclusion[slot_is_exploration] = m / n_unlabelled
    if model_scores is not None:
        scores[slot_is_exploration] = model_scores[explore]
    indices[~slot_is_exploration] = picks
    scores[~slot_is_exploration] = pick_scores
    reasons[~slot_is_exploration] = pick_reasons
    return Ranking(indices, scores, reasons, inclusion)


def _fill_random(picks: IntArray, remaining: IntArray, k: int, rng: np.random.Generator) -> IntArray:
    """Top up ``picks`` to ``k`` items with uniform draws from ``remaining`` minus ``picks``."""
    short = k - picks.shape[0]
    if short <= 0:
        return picks
    rest = remaining[~np.isin(remaining, picks)]
    extra = rng.choice(rest, size=min(short, rest.shape[0]), replace=False).astype(np.int64)
    return np.concatenate([picks, extra])


def _cold_start_positions(
    vectors: FloatArray,
    remaining: IntArray,
    labelled: IntArray,
    k: int,
    spec: StrategySpec,
    seed_vectors: FloatArray | None,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray, np.ndarray]:
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, dtype=_REASON_DTYPE)
    seed_picks = np.zeros(0, dtype=np.int64)
    seed_scores = np.zeros(0, dtype=np.float32)
    share = 0.0
    if seed_vectors is not None and len(seed_vectors) > 0:
        share = cold_start.SEED_QUERY_SHARE
        n_seed = int(np.ceil(k * share))
        seed_picks, seed_scores = cold_start.seed_query_neighbours(vectors, remaining, seed_vectors, n_seed)
    rest = remaining[~np.isin(remaining, seed_picks)]
    n_diverse = k - seed_picks.shape[0]
    div_picks, div_scores = cold_start.diverse_picks(vectors, rest, labelled, n_diverse, random_state=rng)
    # The seed neighbours take the first slot and an even share after it ("seed queries go first").
    merged, from_seed = _interleave(seed_picks, div_picks, share, seed_picks.shape[0] + div_picks.shape[0])
    scores = np.empty(merged.shape[0], dtype=np.float32)
    scores[from_seed] = seed_scores[: int(from_seed.sum())]
    scores[~from_seed] = div_scores[: int((~from_seed).sum())]
    reasons = np.where(from_seed, Reason.SEED_QUERY.value, Reason.COLD_START_DIVERSE.value).astype(_REASON_DTYPE)
    if merged.shape[0] < k:
        full = _fill_random(merged, remaining, k, rng)
        n_extra = full.shape[0] - merged.shape[0]
        scores = np.concatenate([scores, np.zeros(n_extra, np.float32)])
        reasons = np.concatenate([reasons, np.full(n_extra, Reason.RANDOM.value, dtype=_REASON_DTYPE)])
        merged = full
    return merged, scores, reasons


def _with_seeking(
    vectors: FloatArray,
    picks: IntArray,
    scores: FloatArray,
    reasons: np.ndarray,
    remaining: IntArray,
    labelled: IntArray,
    spec: StrategySpec,
    class_counts: Sequence[float] | np.ndarray,
    class_vectors: FloatArray | None,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray, np.ndarray]:
    """Give ``seeking_share`` of the model positions (evenly, the first included) to items that may belong to a
    class with no label yet: near an unseen class's guideline text first, then k-means picks from clusters no
    labelled item covers. The model's own picks keep their order in the other positions."""
    counts = np.asarray(class_counts, dtype=np.float64)
    k = picks.shape[0]
    share = seeking_share(spec, counts)
    n_seek = int(leading_slots(k, share).sum()) if share > 0 else 0
    if n_seek == 0:
        return picks, scores, reasons
    # The seek picks come from what the model did not pick; in a pool too small for that, also from the model's
    # last picks, which then give way.
    pool = remaining[~np.isin(remaining, picks)]
    if pool.shape[0] < n_seek:
        pool = remaining[~np.isin(remaining, picks[: k - n_seek])]
    near = np.zeros(0, dtype=np.int64)
    near_scores = np.zeros(0, dtype=np.float32)
    if class_vectors is not None:
        unseen = np.asarray(class_vectors, dtype=np.float32)[counts <= 0]
        near, near_scores = cold_start.guideline_neighbours(vectors, pool, labelled, unseen, n_seek)
    rest = pool[~np.isin(pool, near)]
    div, div_scores = cold_start.diverse_picks(vectors, rest, labelled, n_seek - near.shape[0], random_state=rng)
    seek = np.concatenate([near, div])
    seek_scores = np.concatenate([near_scores, div_scores]).astype(np.float32)
    seek_reasons = np.array([Reason.SEED_QUERY.value] * near.shape[0] + [Reason.COLD_START_DIVERSE.value]
                            * div.shape[0], dtype=_REASON_DTYPE)
    keep = np.flatnonzero(~np.isin(picks, seek))[: k - seek.shape[0]]
    model_part, scores, reasons = picks[keep], scores[keep], reasons[keep]
    merged, from_seek = _interleave(seek, model_part, share, k)
    out_scores = np.empty(merged.shape[0], dtype=np.float32)
    out_reasons = np.empty(merged.shape[0], dtype=_REASON_DTYPE)
    out_scores[from_seek] = seek_scores[: int(from_seek.sum())]
    out_reasons[from_seek] = seek_reasons[: int(from_seek.sum())]
    out_scores[~from_seek] = scores[: int((~from_seek).sum())]
    out_reasons[~from_seek] = reasons[: int((~from_seek).sum())]
    return merged, out_scores, out_reasons


def _with_search(
    vectors: FloatArray,
    proba: FloatArray,
    exploit: IntArray,
    remaining: IntArray,
    labelled: IntArray | None,
    seed_vectors: FloatArray | None,
    prevalence: Float64Array,
    share: float,
) -> IntArray:
    """Replace an even ``share`` of the exploitation picks (the first kept) by a search near what is known of
    the rarest class: the unlabelled items nearest the labelled items the model puts in it, and nearest the
    seed queries, round-robin. The model's most-likely picks stall once the positives that look like the ones
    found are used up; the neighbours of each found positive and of each seed keep the search going there."""
    n = exploit.shape[0]
    n_search = int(leading_slots(n, share).sum()) if n else 0
    if n_search == 0:
        return exploit
    seen = np.flatnonzero(prevalence > 0)
    rarest = int(seen[np.argmin(prevalence[seen])]) if seen.shape[0] else int(np.argmin(prevalence))
    anchors: list[FloatArray] = []
    if labelled is not None and labelled.shape[0]:
        found = labelled[np.asarray(proba[labelled, rarest]) >= 0.5]
        if found.shape[0]:
            anchors.append(np.asarray(vectors[found], dtype=np.float32))
    if seed_vectors is not None and len(seed_vectors) > 0:
        anchors.append(np.asarray(seed_vectors, dtype=np.float32))
    if not anchors:
        return exploit
    model_part = exploit[: n - n_search]
    pool = remaining[~np.isin(remaining, model_part)]
    near, _ = cold_start.seed_query_neighbours(vectors, pool, np.concatenate(anchors), n_search)
    merged, _ = _interleave(near, np.concatenate([model_part, exploit[n - n_search :]]), share, n)
    # The model's later picks fill in if the search found fewer than asked; no item twice.
    _, first = np.unique(merged, return_index=True)
    out: IntArray = merged[np.sort(first)]
    return out


def _model_positions(
    vectors: FloatArray,
    proba: FloatArray,
    model_scores: FloatArray,
    remaining: IntArray,
    k: int,
    spec: StrategySpec,
    class_counts: Sequence[float] | np.ndarray | None,
    multi_label: bool,
    *,
    labelled: IntArray | None = None,
    seed_vectors: FloatArray | None = None,
) -> tuple[IntArray, FloatArray, np.ndarray]:
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, dtype=_REASON_DTYPE)
    share = 0.0
    exploit = np.zeros(0, dtype=np.int64)
    exploit_scores = np.zeros(proba.shape[0], dtype=np.float32)
    counts = None
    prevalence = None
    if spec.exploitation_share > 0:
        if class_counts is None:
            raise ValueError(f"strategy {spec.name!r} exploits the rarest class and needs class_counts")
        counts = np.asarray(class_counts, dtype=np.float64)
        if spec.exploit_rule == "prevalence":
            prevalence = prevalence_estimate(proba[remaining], counts, multi_label=multi_label)
        share = effective_exploitation_share(spec, counts, prevalence, multi_label=multi_label)
    balanced = spec.class_balance and not multi_label and proba.shape[1] > 2 and class_counts is not None
    fewest_first = np.zeros(0, dtype=np.int64)
    if balanced:
        # Seen classes, fewest labels first (ties by column): the order both balanced compositions follow.
        c = np.asarray(class_counts, dtype=np.float64)
        seen = np.flatnonzero(c > 0)
        fewest_first = seen[np.lexsort((seen, c[seen]))].astype(np.int64)
    if share > 0:
        assert counts is not None
        exploit_scores = rarity_scores(proba, prevalence) if prevalence is not None else minority_scores(proba, counts)
        n_exploit = int(leading_slots(k, share).sum())
        if balanced:
            exploit = per_class_top(proba, remaining, fewest_first, n_exploit)
            exploit_scores = proba.max(axis=1).astype(np.float32)
        else:
            exploit = _pick(vectors, exploit_scores, remaining, n_exploit, spec.diversity_threshold, None)
            if spec.search_share > 0 and prevalence is not None:
                exploit = _with_search(vectors, proba, exploit, remaining, labelled, seed_vectors, prevalence,
                                       spec.search_share)
    rest = remaining[~np.isin(remaining, exploit)] if exploit.shape[0] else remaining
    if balanced:
        predicted = np.argmax(proba, axis=1).astype(np.int64)
        uncertain = round_robin_by_group(model_scores, predicted, rest, fewest_first, k - exploit.shape[0])
    else:
        uncertain = _pick(
            vectors,
            model_scores,
            rest,
            k - exploit.shape[0],
            spec.diversity_threshold,
            exploit if exploit.shape[0] else None,
        )
    merged, from_exploit = _interleave(exploit, uncertain, share, k)
    scores = np.where(from_exploit, exploit_scores[merged], model_scores[merged]).astype(np.float32)
    reasons = np.where(from_exploit, Reason.EXPLOITATION.value, Reason.UNCERTAINTY.value).astype(_REASON_DTYPE)
    return merged, scores, reasons
