"""learning/core/vocabulary.py is the one home of the names both halves share: every branch of the ranking emits
only its reasons (and, together, all of them), every registered strategy is one of its names, and the one
content hash is the one every cache uses. Importing it loads neither numpy nor scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learning.core import cold_start, embedders, ranking, strategies, vocabulary
from learning.core.ranking import rank_pool
from learning.core.vocabulary import RANKING_REASONS, REASON_LABELS, Reason, StrategyName

ROOT = Path(__file__).resolve().parents[3]


def _pool(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _emitted(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Drive every branch of rank_pool that assigns reasons; return the reasons each one emitted."""
    vectors = _pool(60)
    p = np.random.default_rng(1).random(60).astype(np.float32)
    proba = np.c_[1 - p, p]
    runs = {
        # Passive sampling: the whole ranking is one random sample.
        "random strategy": rank_pool(vectors, labelled_indices=[], strategy="random", random_state=0),
        # Cold start with seed queries: seed neighbours, diverse picks and exploration.
        "cold start": rank_pool(vectors, labelled_indices=[], strategy="margin", seed_vectors=vectors[:2],
                                exploration_rate=0.2, random_state=0),
        # A model with a rare class: exploitation and uncertainty (the default strategy).
        "model": rank_pool(vectors, labelled_indices=[0, 1, 2], strategy=StrategyName.MARGIN_EXPLOIT.value,
                           proba=proba, class_counts=[30, 1], exploration_rate=0.2, random_state=0),
    }
    # Cold start short of diverse picks (k-means only looks at a sample of a huge pool): the random top-up.
    diverse = cold_start.diverse_picks

    def short(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        picks, scores = diverse(*args, **kwargs)
        return picks[:2], scores[:2]

    monkeypatch.setattr(cold_start, "diverse_picks", short)
    runs["cold start top-up"] = rank_pool(vectors, labelled_indices=[], strategy="margin", exploration_rate=0.0,
                                          depth=10, random_state=0)
    return {name: {str(r) for r in run.reasons} for name, run in runs.items()}


def test_every_ranking_branch_emits_only_vocabulary_reasons_and_together_all_of_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    emitted = _emitted(monkeypatch)
    assert emitted["random strategy"] == {"random"}
    assert emitted["cold start"] == {"seed_query", "cold_start_diverse", "exploration"}
    assert emitted["cold start top-up"] == {"cold_start_diverse", "random"}
    assert emitted["model"] == {"exploitation", "uncertainty", "exploration"}
    union = set().union(*emitted.values())
    assert union == {r.value for r in RANKING_REASONS}
    assert ranking.REASONS == ("uncertainty", "exploitation", "exploration", "cold_start_diverse", "seed_query",
                               "random")


def test_every_reason_has_a_label_and_fits_the_ranking_dtype_and_the_column() -> None:
    assert set(REASON_LABELS) == set(Reason)
    assert all(REASON_LABELS[r].strip() and REASON_LABELS[r] != r.value for r in Reason)
    width = int(np.dtype(ranking._REASON_DTYPE).itemsize / 4)
    assert width == max(len(r.value) for r in RANKING_REASONS) == len("cold_start_diverse")
    assert all(len(r.value) <= vocabulary.REASON_MAX_LENGTH for r in Reason)
    assert {Reason.EXPLORATION, Reason.RANDOM} == vocabulary.SAMPLE_REASONS


def test_strategy_registry_and_vocabulary_name_the_same_strategies() -> None:
    assert list(strategies.STRATEGIES) == ["random", "least_confidence", "margin", "entropy", "margin_exploit"]
    assert set(strategies.STRATEGIES) == {s.value for s in StrategyName}
    assert vocabulary.STRATEGY_CHOICES == ("default", "random", "least_confidence", "margin", "entropy",
                                           "margin_exploit")
    assert strategies.DEFAULT_STRATEGY == vocabulary.DEFAULT_STRATEGY == "margin_exploit"
    assert type(strategies.STRATEGIES["margin"].name) is str  # a plain string, as stored and printed
    assert strategies.get_strategy("default") is strategies.STRATEGIES["margin_exploit"]


def test_lazy_package_exports_resolve() -> None:
    import learning.core as core

    assert set(core.__all__) == set(core._HOMES)
    for name in core.__all__:
        assert getattr(core, name) is not None


def test_one_content_hash() -> None:
    assert embedders.content_hash is vocabulary.content_hash
    from learning.core import content_hash

    assert content_hash is vocabulary.content_hash
    assert vocabulary.content_hash("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_importing_the_vocabulary_loads_neither_numpy_nor_sklearn() -> None:
    code = ("import json, sys\nimport learning.core.vocabulary\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'numpy', 'sklearn', 'django'} "
            "or m.startswith('learning.core.') and m != 'learning.core.vocabulary')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []
