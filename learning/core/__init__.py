"""Sift's plain-Python machine-learning core: embedders, classifiers, strategies, ranking, metrics, simulation.

No Django, DRF, Celery or project imports here (an import-linter contract and a test enforce it), and no
torch at import time: the MiniLM embedder loads it lazily. The names below are the API the workers call.

They are resolved lazily (PEP 562): importing ``learning.core.vocabulary`` (the names the Django side shares
with the core, imported by web processes) must not drag numpy and scikit-learn in with this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learning.core.classifiers import DEFAULT_C, DEFAULT_CLASS_WEIGHT, EmbeddingClassifier
    from learning.core.cold_start import can_fit
    from learning.core.embedder_registry import get_embedder
    from learning.core.embedders import (
        Embedder,
        HashingEmbedder,
        SentenceTransformerEmbedder,
        content_hash,
    )
    from learning.core.metrics import (
        area_under_curve,
        average_precision,
        horvitz_thompson_total,
        labels_to_reach,
        macro_f1,
    )
    from learning.core.ranking import DEFAULT_DEPTH, REASONS, EmptyPool, PoolExhausted, Ranking, rank_pool
    from learning.core.strategies import (
        DEFAULT_EXPLORATION_RATE,
        DEFAULT_STRATEGY,
        STRATEGIES,
        StrategySpec,
        get_strategy,
    )
    from learning.core.taxonomy import Taxonomy, rollup_proba

_HOMES: dict[str, str] = {
    "DEFAULT_C": "classifiers", "DEFAULT_CLASS_WEIGHT": "classifiers", "EmbeddingClassifier": "classifiers",
    "can_fit": "cold_start",
    "Embedder": "embedders", "HashingEmbedder": "embedders", "SentenceTransformerEmbedder": "embedders",
    "content_hash": "vocabulary", "get_embedder": "embedder_registry",
    "area_under_curve": "metrics", "average_precision": "metrics", "horvitz_thompson_total": "metrics",
    "labels_to_reach": "metrics", "macro_f1": "metrics",
    "DEFAULT_DEPTH": "ranking", "REASONS": "ranking", "EmptyPool": "ranking", "PoolExhausted": "ranking",
    "Ranking": "ranking", "rank_pool": "ranking",
    "DEFAULT_EXPLORATION_RATE": "strategies", "DEFAULT_STRATEGY": "vocabulary", "STRATEGIES": "strategies",
    "StrategySpec": "strategies", "get_strategy": "strategies",
    "Taxonomy": "taxonomy", "rollup_proba": "taxonomy",
}

__all__ = [
    "DEFAULT_C",
    "DEFAULT_CLASS_WEIGHT",
    "DEFAULT_DEPTH",
    "DEFAULT_EXPLORATION_RATE",
    "DEFAULT_STRATEGY",
    "REASONS",
    "STRATEGIES",
    "Embedder",
    "EmbeddingClassifier",
    "EmptyPool",
    "HashingEmbedder",
    "PoolExhausted",
    "Ranking",
    "SentenceTransformerEmbedder",
    "StrategySpec",
    "Taxonomy",
    "area_under_curve",
    "average_precision",
    "can_fit",
    "content_hash",
    "get_embedder",
    "get_strategy",
    "horvitz_thompson_total",
    "labels_to_reach",
    "macro_f1",
    "rank_pool",
    "rollup_proba",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'learning.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"learning.core.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
