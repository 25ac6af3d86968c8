"""The names Sift's two halves share, each with ONE home: strategy names, selection reasons, the content key.

Why here: the core emits these names (a ranking's reasons), accepts them (a strategy name) or keys its caches by
them (the content hash), and the Django side stores, validates and shows the same strings (a project's
``strategy``, ``SelectionReason``, ``Item.content_hash``). Each list used to exist in both halves, and they
drifted: ``create_project --strategy margin_exploit`` (the default's own name) was refused, and the ranking's
``exploitation`` and ``random`` were missing from the API's enum, so the labelling page showed a raw key.

Rules that keep this module importable from everywhere (labeling's ground floor included, by an explicit
import-linter exception in pyproject.toml):
- standard library only: no numpy, no Django, nothing of the project (a contract forbids them);
- ``learning/core/__init__.py`` loads its heavier modules lazily, so importing this module does not pull
  scikit-learn into a web process (tests/learning/core/test_vocabulary.py checks it).

Changing a value here changes stored data's meaning: reasons and strategy names are stored in rows, and the
content hash keys every cached vector. Add names; do not rename them.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum


class StrategyName(StrEnum):
    """Every strategy the core registers (learning/core/strategies.py builds one spec per name)."""

    RANDOM = "random"
    LEAST_CONFIDENCE = "least_confidence"
    MARGIN = "margin"
    ENTROPY = "entropy"
    MARGIN_EXPLOIT = "margin_exploit"


DEFAULT_ALIAS = "default"
"""A project may store ``"default"``: it then follows whatever ``DEFAULT_STRATEGY`` is at each retrain."""

DEFAULT_STRATEGY: str = StrategyName.MARGIN_EXPLOIT.value
"""The strategy a new project uses (docs/al_curves.md has the measurements that chose it)."""

STRATEGY_CHOICES: tuple[str, ...] = (DEFAULT_ALIAS, *(name.value for name in StrategyName))
"""What a project's ``strategy`` setting, ``create_project --strategy`` and the simulation accept."""


class Reason(StrEnum):
    """Why an item was put in front of a reviewer: stored on rankings, leases and annotations, and exported."""

    # Emitted by the ranking (learning/core/ranking.py):
    UNCERTAINTY = "uncertainty"
    EXPLOITATION = "exploitation"
    EXPLORATION = "exploration"
    COLD_START_DIVERSE = "cold_start_diverse"
    SEED_QUERY = "seed_query"
    RANDOM = "random"
    # Assigned by the queue itself (labeling/services/queues.py, gold.py):
    RELABEL = "relabel"
    BANK_MATCH = "bank_match"
    FALLBACK_RANDOM = "fallback_random"
    GOLD = "gold"
    # Never in front of a reviewer: the reason of a propagated answer (labeling/services/propagation.py).
    PROPAGATED = "propagated"
    OTHER = "other"


REASON_LABELS: dict[Reason, str] = {
    Reason.UNCERTAINTY: "Model uncertainty",
    Reason.EXPLOITATION: "Likely rare class",
    Reason.EXPLORATION: "Uniform random exploration",
    Reason.COLD_START_DIVERSE: "Cold start: diverse pick",
    Reason.SEED_QUERY: "Cold start: near a seed query",
    Reason.RANDOM: "Random sample",
    Reason.RELABEL: "Re-queued after a taxonomy change",
    Reason.BANK_MATCH: "Matched a match bank: confirm it",
    Reason.FALLBACK_RANDOM: "Random order: the model is not ready yet",
    Reason.GOLD: "Gold check",
    Reason.PROPAGATED: "Propagated from its cluster's representative",
    Reason.OTHER: "Other",
}
"""The human label of every reason: the API's choices and the labelling page's badge read it."""

RANKING_REASONS: tuple[Reason, ...] = (
    Reason.UNCERTAINTY, Reason.EXPLOITATION, Reason.EXPLORATION, Reason.COLD_START_DIVERSE, Reason.SEED_QUERY,
    Reason.RANDOM,
)
"""The reasons ``rank_pool`` can emit (``Ranking.reasons``); tests/learning/core/test_vocabulary.py drives every
branch of the ranking and checks that this is exactly the set it emits."""

SAMPLE_REASONS: frozenset[Reason] = frozenset({Reason.EXPLORATION, Reason.RANDOM})
"""Reasons whose picks are a probability sample of the then-unlabelled pool (their inclusion probability is
below 1 by design): prevalence estimates use these positions only (learning/core/ranking.py's invariants)."""

EMBEDDER_NAMES = ("minilm", "static", "multilingual", "hashing")
"""Project.embedder / ``--embedder`` values (learning/core/embedders.py's registry builds each one). "minilm" is
the reference; "static" the fast English tier; "multilingual" the tier for text in many languages
(learning/core/multilingual.py); "hashing" is for tests and smoke runs, not a semantic model."""

REASON_MAX_LENGTH = 32
"""The database column width of every stored reason."""


def content_hash(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 text: ``Item.content_hash`` and the key of every vector cache.

    The importer stores it, the embedding worker and the simulation's disk cache look vectors up by it, and
    hard deletion forgets vectors by it: if two implementations ever differed, every item would look
    un-embedded and be embedded again. Frozen: changing it invalidates every cache.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check() -> None:
    # Import-time: a reason without a label, or longer than its column, is a bug that would only show up in a
    # reviewer's browser or as a database error mid-retrain.
    missing = [r.value for r in Reason if r not in REASON_LABELS]
    if missing:
        raise RuntimeError(f"selection reasons without a label: {missing}")
    too_long = [r.value for r in Reason if len(r.value) > REASON_MAX_LENGTH]
    if too_long:
        raise RuntimeError(f"selection reasons longer than {REASON_MAX_LENGTH}: {too_long}")


_check()
