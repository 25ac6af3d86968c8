"""The embedder registry: the names a project or the CLI may choose, which one a new project gets, and the factory.

``get_embedder(name)`` is the one place a name becomes an embedder. It lives apart from the embedders themselves
(learning/core/embedders.py, learning/core/static_embedder.py) because it imports both of them, while the static
tier builds on the MiniLM helpers in embedders.py: kept in embedders.py, the factory made the two modules import
each other.
"""

from __future__ import annotations

from pathlib import Path

from learning.core.embedders import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from learning.core.static_embedder import StaticEmbedder

# Project.embedder / --embedder values (their home is learning/core/vocabulary.py, which the labeling side validates
# against): "minilm" is the reference; "static" is the fast tier (learning/core/static_embedder.py); "multilingual"
# is multilingual-e5-small (learning/core/multilingual.py); "hashing" is for tests and smoke runs.
from learning.core.vocabulary import EMBEDDER_NAMES as EMBEDDER_NAMES

# Pools at least this large default to the fast tier (``recommended_embedder``). MiniLM embeds 100-200 short texts a
# second on two cores: 100k items is 10-15 minutes of embedding before the first ranking, and 1M is hours; the
# static tier does 1M in about a minute with AP within a point of MiniLM on our spam sets (bench/embedding.py).
STATIC_DEFAULT_FROM = 100_000


def recommended_embedder(pool_size: int) -> str:
    """The embedder a new project of about ``pool_size`` items should use: MiniLM below ``STATIC_DEFAULT_FROM``
    (best vectors, affordable), the static tier from there on (embedding time would otherwise dominate)."""
    return "static" if pool_size >= STATIC_DEFAULT_FROM else "minilm"


def get_embedder(name: str, *, model_cache_dir: str | Path | None = None) -> Embedder:
    """The embedder for a project setting or CLI flag (one of ``EMBEDDER_NAMES``).

    ``model_cache_dir`` is where the static tier keeps its distilled table (default: see
    ``static_embedder.default_model_cache_dir``).
    """
    if name == "minilm":
        return SentenceTransformerEmbedder()
    if name == "static":
        return StaticEmbedder(model_cache_dir)
    if name == "multilingual":
        from learning.core.multilingual import MultilingualE5Embedder

        return MultilingualE5Embedder()
    if name == "hashing":
        return HashingEmbedder()
    raise ValueError(f"unknown embedder {name!r}; expected one of {', '.join(EMBEDDER_NAMES)}")
