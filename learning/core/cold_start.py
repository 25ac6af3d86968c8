"""Cold start: the one rule for when a model may be fitted, and where questions come from before that.

THE RULE. A model is fitted as soon as the labelled set can separate something:

- single-label: at least two different classes have at least one label each;
- multi-label: at least one label key has been seen both present and absent.

Until then (zero labels, or every label so far the same answer) the ranking is a cold start:

1. seed queries or seed examples from the policy lead (embedded with the project's embedder) go first: the
   pool items nearest to each seed, taken round-robin across seeds so that one seed cannot fill the queue;
2. then diverse picks: k-means centres over (a sample of) the unlabelled pool, seeded by ``random_state``,
   preferring clusters that hold no labelled item yet, biggest cluster first; each centre is represented by
   its nearest pool item.

Why this rule and not "N labels first": with rare positives (2% spam) a fixed N of random labels often holds
no positive at all, and a one-class model ranks nothing; with two classes seen, a balanced logistic
regression is already a better guide than k-means (docs/al_curves.md).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from sklearn.cluster import KMeans

from learning.core._types import FloatArray, IntArray

KMEANS_SAMPLE_SIZE = 5000
"""k-means runs on at most this many unlabelled items: a million-item pool still clusters in about a second."""

KMEANS_MAX_ITER = 20
"""Rough centres are enough to spread questions out; more iterations cost time and buy nothing visible."""

KMEANS_MAX_CLUSTERS = 100
"""More clusters than this cost seconds and spread no better; deeper cold-start rankings take each cluster's
second-nearest item, then third, ... (round-robin)."""

SIMILARITY_CHUNK = 65_536
"""Pool rows per seed-similarity block (bounded memory whatever the pool size or dtype)."""

SEED_QUERY_SHARE = 0.5
"""Share of cold-start positions given to seed-query neighbours (interleaved, the first position is a seed's)."""


def can_fit(labels: Sequence[str] | Sequence[Collection[str]], *, multi_label: bool = False) -> bool:
    """THE cold-start rule (see the module docstring): may a model be fitted on these labels?"""
    if multi_label:
        sets = [frozenset(row) for row in labels]
        if not sets:
            return False
        present = set().union(*sets)
        return any(not all(key in s for s in sets) for key in present)
    return len(set(labels)) >= 2


def seed_query_neighbours(
    vectors: FloatArray, candidates: IntArray, seed_vectors: FloatArray, k: int
) -> tuple[IntArray, FloatArray]:
    """Up to ``k`` candidates nearest to the seeds, round-robin across seeds (each seed's best, then each seed's
    second best, ...), without repeats. Returns (pool indices, cosine similarity to the seed that chose them)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    seeds = np.asarray(seed_vectors, dtype=np.float32)
    k = min(int(k), candidates.shape[0])
    if k <= 0 or seeds.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    per_seed = min(k, candidates.shape[0])
    # In row chunks: the worker's pool may be float16 and a million rows; one whole-pool product would first
    # materialise a float32 copy of it (1.5 GB).
    sims = np.empty((candidates.shape[0], seeds.shape[0]), dtype=np.float32)  # (m, s)
    for start in range(0, candidates.shape[0], SIMILARITY_CHUNK):
        block = candidates[start : start + SIMILARITY_CHUNK]
        sims[start : start + SIMILARITY_CHUNK] = np.asarray(vectors[block], dtype=np.float32) @ seeds.T
    # Each seed's per_seed best candidates, best first: an (s, per_seed) table of rows into `candidates`.
    part = np.argpartition(-sims, per_seed - 1, axis=0)[:per_seed].T
    part_sims = np.take_along_axis(sims.T, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    ranked = np.take_along_axis(part, order, axis=1)
    ranked_sims = np.take_along_axis(part_sims, order, axis=1)
    # Round-robin: column-major flattening visits rank 0 of every seed, then rank 1, ...
    flat = ranked.T.reshape(-1)
    flat_sims = ranked_sims.T.reshape(-1)
    _, first = np.unique(flat, return_index=True)
    keep = np.sort(first)[:k]
    return candidates[flat[keep]], flat_sims[keep].astype(np.float32)


SEEK_TRIES = 3
"""How many labelled items nearer a class's guideline text than any unlabelled one it takes to stop seeking that
class by its text: after three nearest neighbours that were all answered otherwise, its text does not find it."""


def guideline_neighbours(
    vectors: FloatArray,
    candidates: IntArray,
    labelled: IntArray,
    class_vectors: FloatArray,
    k: int,
    *,
    tries: int = SEEK_TRIES,
) -> tuple[IntArray, FloatArray]:
    """Up to ``k`` candidates nearest the guideline texts of classes still being sought (rows of
    ``class_vectors``; an all-zero row means "no text"), round-robin across classes as ``seed_query_neighbours``.

    Stateless give-up rule: a class stops being sought once ``tries`` labelled items are at least as near its
    text as the nearest candidate -- the ranking has already put its best guesses in front of reviewers and
    none came back as that class (else it would not be sought any more).
    """
    seeds = np.asarray(class_vectors, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.int64)
    labelled = np.asarray(labelled, dtype=np.int64)
    has_text = np.abs(seeds).sum(axis=1) > 0
    if k <= 0 or candidates.shape[0] == 0 or not has_text.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    seeds = seeds[has_text]
    best = np.full(seeds.shape[0], -np.inf, dtype=np.float32)
    for start in range(0, candidates.shape[0], SIMILARITY_CHUNK):
        block = np.asarray(vectors[candidates[start : start + SIMILARITY_CHUNK]], dtype=np.float32)
        np.maximum(best, (block @ seeds.T).max(axis=0), out=best)
    if labelled.shape[0]:
        lab_sims = np.asarray(vectors[labelled], dtype=np.float32) @ seeds.T
        tried = (lab_sims >= best[None, :]).sum(axis=0)
        seeds = seeds[tried < tries]
    return seed_query_neighbours(vectors, candidates, seeds, k)


def diverse_picks(
    vectors: FloatArray,
    candidates: IntArray,
    labelled: IntArray,
    k: int,
    *,
    random_state: np.random.Generator,
    sample_size: int = KMEANS_SAMPLE_SIZE,
) -> tuple[IntArray, FloatArray]:
    """Up to ``k`` representative candidates: k-means centres over a sample, uncovered clusters first.

    ``n_clusters = k + min(len(labelled), 3k)`` (at most KMEANS_MAX_CLUSTERS): room for the clusters labelled
    items already cover, so that after a first batch of (say) all-ham answers the next batch comes from clusters
    nobody has looked at. Each cluster is represented by its member nearest the centre; past one per cluster,
    picks go round-robin to second-nearest members. Returns (pool indices, score) where the score is the
    picking cluster's share of the sample.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    labelled = np.asarray(labelled, dtype=np.int64)
    k = min(int(k), candidates.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    rng = random_state
    if candidates.shape[0] > sample_size:
        sample = np.sort(rng.choice(candidates, size=sample_size, replace=False))
    else:
        sample = candidates
    n_clusters = min(sample.shape[0], k + min(labelled.shape[0], 3 * k), KMEANS_MAX_CLUSTERS)
    X = np.asarray(vectors[sample], dtype=np.float32)
    km = KMeans(
        n_clusters=n_clusters,
        n_init=1,
        max_iter=KMEANS_MAX_ITER,
        random_state=int(rng.integers(0, 2**31 - 1)),
    ).fit(X)
    centres = np.asarray(km.cluster_centers_, dtype=np.float32)
    assign = np.asarray(km.labels_, dtype=np.int64)
    sizes = np.bincount(assign, minlength=n_clusters)
    covered = np.zeros(n_clusters, dtype=bool)
    if labelled.shape[0] > 0:
        lab = np.asarray(vectors[labelled], dtype=np.float32)
        d_lab = (lab**2).sum(1)[:, None] - 2.0 * lab @ centres.T + (centres**2).sum(1)[None, :]
        covered[np.argmin(d_lab, axis=1)] = True
    # Representative of each cluster: the member nearest its centre (squared Euclidean).
    d = (X**2).sum(1) - 2.0 * np.einsum("ij,ij->i", X, centres[assign]) + (centres[assign] ** 2).sum(1)
    clusters = np.arange(n_clusters)
    # Cluster priority: uncovered before covered, then bigger before smaller, then by id for determinism.
    priority = np.empty(n_clusters, dtype=np.int64)
    priority[np.lexsort((clusters, -sizes, covered))] = clusters
    # Members grouped by cluster, nearest to the centre first; `within` is each member's rank in its cluster.
    by_dist = np.lexsort((d, assign))
    grouped = assign[by_dist]
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    within = np.arange(grouped.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, grouped.shape[0]]))
    # Round-robin: every cluster's representative (in priority order), then every cluster's second, ...
    order = np.lexsort((priority[grouped], within))[:k]
    picks = sample[by_dist[order]]
    scores = (sizes[grouped[order]] / float(sample.shape[0])).astype(np.float32)
    return picks, scores
