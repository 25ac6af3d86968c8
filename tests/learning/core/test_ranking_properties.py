"""Hypothesis properties of rank_pool: the invariants stated at the top of learning/core/ranking.py."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.core.ranking import REASONS, exploration_slots, rank_pool
from learning.core.strategies import STRATEGIES


@st.composite
def pools(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(min_value=1, max_value=120))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n_labelled = draw(st.integers(min_value=0, max_value=n - 1))
    labelled = rng.choice(n, size=n_labelled, replace=False)
    with_model = draw(st.booleans())
    k = draw(st.integers(min_value=2, max_value=4))
    proba = rng.dirichlet(np.ones(k), size=n).astype(np.float32) if with_model else None
    counts = rng.integers(0, 20, size=k) if with_model else None
    return {
        "vectors": vectors,
        "labelled": labelled,
        "proba": proba,
        "counts": counts,
        "strategy": draw(st.sampled_from(sorted(STRATEGIES))),
        "rate": draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])),
        "depth": draw(st.integers(min_value=1, max_value=150)),
        "random_state": draw(st.integers(min_value=0, max_value=1000)),
        "seeds": vectors[:2] if draw(st.booleans()) else None,
        "phase": draw(st.none() | st.floats(min_value=0.0, max_value=1.0, exclude_max=True)),
    }


def _rank(case: dict[str, object]):  # type: ignore[no-untyped-def]
    return rank_pool(
        case["vectors"],  # type: ignore[arg-type]
        labelled_indices=case["labelled"],  # type: ignore[arg-type]
        strategy=case["strategy"],  # type: ignore[arg-type]
        proba=case["proba"],  # type: ignore[arg-type]
        class_counts=case["counts"],  # type: ignore[arg-type]
        seed_vectors=case["seeds"],  # type: ignore[arg-type]
        exploration_rate=case["rate"],  # type: ignore[arg-type]
        exploration_phase=case["phase"],  # type: ignore[arg-type]
        depth=case["depth"],  # type: ignore[arg-type]
        random_state=case["random_state"],  # type: ignore[arg-type]
    )


@settings(max_examples=150, deadline=None)
@given(pools())
def test_ranking_invariants(case: dict[str, object]) -> None:
    ranking = _rank(case)
    n = len(case["vectors"])  # type: ignore[arg-type]
    labelled = set(np.asarray(case["labelled"]).tolist())
    n_unlabelled = n - len(labelled)
    expected_len = min(int(case["depth"]), n_unlabelled)  # type: ignore[call-overload]
    idx = ranking.indices.tolist()

    assert len(idx) == expected_len
    assert len(set(idx)) == len(idx)
    assert all(0 <= i < n for i in idx)
    assert not labelled.intersection(idx)
    assert set(ranking.reasons.tolist()) <= set(REASONS)
    assert ranking.scores.shape == ranking.inclusion_probabilities.shape == ranking.indices.shape
    pi = ranking.inclusion_probabilities
    assert np.all((pi > 0.0) & (pi <= 1.0))

    explore = ranking.reasons == "exploration"
    if case["strategy"] == "random":
        assert set(ranking.reasons.tolist()) == {"random"}
        assert np.allclose(pi, expected_len / n_unlabelled)
    elif "random" not in ranking.reasons.tolist():
        # the exploration share holds for every prefix (floor(j * rate) or one more) and inclusion is m / N
        rate = float(case["rate"])  # type: ignore[arg-type]
        m = int(explore.sum())
        if case["phase"] is not None:
            phase = float(case["phase"])  # type: ignore[arg-type]
            np.testing.assert_array_equal(explore, exploration_slots(expected_len, rate, phase))
            assert m == math.floor(expected_len * rate + phase + 1e-9) - math.floor(phase + 1e-9)
        j = np.arange(1, expected_len + 1)
        floor = np.floor(j * rate + 1e-9)
        prefix = np.cumsum(explore)
        assert np.all((prefix >= floor) & (prefix <= floor + 1))
        assert np.allclose(pi[explore], m / n_unlabelled)
        assert np.all(pi[~explore] == 1.0)


@settings(max_examples=40, deadline=None)
@given(pools())
def test_same_random_state_same_ranking(case: dict[str, object]) -> None:
    a, b = _rank(case), _rank(case)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.reasons, b.reasons)
    np.testing.assert_array_equal(a.inclusion_probabilities, b.inclusion_probabilities)


def test_random_phase_puts_exploration_into_short_prefixes() -> None:
    """Reviewers often consume only the first few positions of a ranking before a retrain replaces it. With the
    phase drawn per ranking, the first five positions hold 5 * rate exploration items on average (at phase 0
    they would hold none: the slots would sit at 9, 19, 29)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    proba = rng.dirichlet(np.ones(2), size=60).astype(np.float32)

    def first_five(**kw: object) -> int:
        r = rank_pool(vectors, labelled_indices=[0], strategy="margin", proba=proba, depth=40, **kw)  # type: ignore[arg-type]
        assert int((r.reasons == "exploration").sum()) == 4  # 40 * 0.1 whatever the phase
        return int((r.reasons[:5] == "exploration").sum())

    assert first_five(exploration_phase=0.0, random_state=1) == 0
    counts = [first_five(random_state=s) for s in range(400)]
    assert abs(np.mean(counts) - 0.5) < 0.1
