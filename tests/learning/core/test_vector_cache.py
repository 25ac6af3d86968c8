"""The simulation's on-disk vector cache: a second run embeds nothing, order and duplicates are kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from learning.core._types import FloatArray
from learning.core.embedders import HashingEmbedder, content_hash
from learning.core.vector_cache import embed_with_cache, load_vectors


class CountingEmbedder:
    """Wraps the hashing embedder and records every text it is asked to embed."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(dim=8)
        self.name = "counting"
        self.dim = 8
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self.seen.extend(texts)
        return self.inner.embed(texts)


def test_second_run_embeds_nothing(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    texts = ["a b", "c d", "a b", "e f"]
    first, n_first = embed_with_cache(texts, emb, tmp_path)
    second, n_second = embed_with_cache(texts, emb, tmp_path)
    assert (n_first, n_second) == (3, 0)
    assert emb.seen == ["a b", "c d", "e f"]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, emb.inner.embed(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counting.npz"]


def test_only_new_texts_are_embedded(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    embed_with_cache(["x"], emb, tmp_path)
    vectors, n = embed_with_cache(["y", "x"], emb, tmp_path)
    assert n == 1
    assert emb.seen == ["x", "y"]
    np.testing.assert_array_equal(vectors, emb.inner.embed(["y", "x"]))


def test_cache_file_has_no_pickles_and_is_keyed_by_hash(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    embed_with_cache(["hello"], emb, tmp_path)
    with np.load(tmp_path / "counting.npz", allow_pickle=False) as data:
        assert data["hashes"].tolist() == [content_hash("hello")]
        assert data["vectors"].dtype == np.float32
    hashes, vectors = load_vectors(tmp_path, "counting", 8)
    assert hashes == [content_hash("hello")]
    assert vectors.shape == (1, 8)


def test_no_cache_dir_embeds_unique_texts_once() -> None:
    emb = CountingEmbedder()
    vectors, n = embed_with_cache(["q", "q", "r"], emb, None)
    assert n == 2
    assert emb.seen == ["q", "r"]
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_empty_input(tmp_path: Path) -> None:
    vectors, n = embed_with_cache([], CountingEmbedder(), tmp_path)
    assert vectors.shape == (0, 8)
    assert n == 0
