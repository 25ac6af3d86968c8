"""Sift's plain-Python machine-learning core: embedders, classifiers, strategies, ranking, metrics, simulation.

No Django, DRF, Celery or project imports here (an import-linter contract and a test enforce it), and no
torch at import time: the MiniLM embedder loads it lazily. The names below are the API the workers call.
"""

from __future__ import annotations

from learning.core.classifiers import DEFAULT_C, DEFAULT_CLASS_WEIGHT, EmbeddingClassifier
from learning.core.cold_start import can_fit
from learning.core.embedders import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    get_embedder,
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
