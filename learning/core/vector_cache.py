"""An on-disk vector cache for the simulation and the benchmarks (``--cache DIR``).

One ``<embedder name>.npz`` per embedder holds two arrays: ``hashes`` (content hashes, fixed-width unicode)
and ``vectors`` (float32, one row per hash). Files are read with ``allow_pickle=False`` and written to a
temporary file then renamed, so a crash mid-write never leaves a half-written cache behind. Keys are
``content_hash(text)`` and the embedder's ``name`` -- the same key the Django side uses for its database cache.

This cache is for single-process tools (simulate, bench). Two processes writing the same file at once would
each keep their own additions and the last rename wins: nothing is corrupted, some vectors are re-embedded.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from learning.core._types import FloatArray
from learning.core.embedders import Embedder, content_hash

# Embedding in chunks and saving after each one means an interrupted long run (MiniLM over ~6k e-mails takes
# minutes on two cores) keeps what it already paid for.
CHUNK_SIZE = 1024


def _cache_file(directory: Path, embedder_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", embedder_name)
    return directory / f"{safe}.npz"


def load_vectors(directory: Path, embedder_name: str, dim: int) -> tuple[list[str], FloatArray]:
    """Read the cached (hashes, vectors) for one embedder; empty when there is no cache file yet."""
    path = _cache_file(directory, embedder_name)
    if not path.exists():
        return [], np.zeros((0, dim), dtype=np.float32)
    with np.load(path, allow_pickle=False) as data:
        hashes = [str(h) for h in data["hashes"]]
        vectors = np.asarray(data["vectors"], dtype=np.float32)
    if vectors.shape != (len(hashes), dim):
        raise ValueError(f"corrupt vector cache {path}: vectors {vectors.shape}, {len(hashes)} hashes, dim {dim}")
    return hashes, vectors


def _save_vectors(directory: Path, embedder_name: str, hashes: list[str], vectors: FloatArray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = _cache_file(directory, embedder_name)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, hashes=np.array(hashes, dtype="U64"), vectors=vectors)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def embed_with_cache(texts: Sequence[str], embedder: Embedder, cache_dir: str | Path | None) -> tuple[FloatArray, int]:
    """Vectors for ``texts`` in order, embedding only texts whose (hash, embedder) is not cached yet.

    Returns ``(vectors, n_embedded)``; ``n_embedded`` is 0 on a second run over the same texts. Duplicate
    texts are embedded once. With ``cache_dir=None`` everything is embedded and nothing is written.
    """
    if cache_dir is None:
        unique = list(dict.fromkeys(texts))
        vecs = embedder.embed(unique) if unique else np.zeros((0, embedder.dim), dtype=np.float32)
        row = {t: i for i, t in enumerate(unique)}
        return vecs[[row[t] for t in texts]] if texts else vecs, len(unique)

    directory = Path(cache_dir)
    hashes, vectors = load_vectors(directory, embedder.name, embedder.dim)
    position = {h: i for i, h in enumerate(hashes)}
    text_hashes = [content_hash(t) for t in texts]
    missing: dict[str, str] = {}
    for h, t in zip(text_hashes, texts, strict=True):
        if h not in position and h not in missing:
            missing[h] = t

    todo = list(missing.items())
    for start in range(0, len(todo), CHUNK_SIZE):
        chunk = todo[start : start + CHUNK_SIZE]
        new = embedder.embed([t for _, t in chunk])
        for h, _ in chunk:
            position[h] = len(hashes)
            hashes.append(h)
        vectors = np.concatenate([vectors, new.astype(np.float32, copy=False)])
        _save_vectors(directory, embedder.name, hashes, vectors)

    if not text_hashes:
        return np.zeros((0, embedder.dim), dtype=np.float32), 0
    rows = np.fromiter((position[h] for h in text_hashes), dtype=np.int64, count=len(text_hashes))
    out: FloatArray = vectors[rows]
    return out, len(todo)
