"""Embedders: the hash key, the hashing embedder's promises, and the registry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from learning.core.embedders import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    get_embedder,
)


def test_content_hash_is_sha256_of_utf8() -> None:
    assert content_hash("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert content_hash("é") == "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"


def test_hashing_embedder_shape_dtype_and_unit_norm() -> None:
    emb = HashingEmbedder()
    vectors = emb.embed(["free prize call now", "FREE prize, call now!", "see you at lunch tomorrow", ""])
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.ones(4), atol=1e-6)
    # The empty text has no n-grams: it maps to the first basis vector, so its norm is still 1.
    assert np.flatnonzero(vectors[3]).tolist() == [0]


def test_hashing_embedder_similar_texts_are_closer() -> None:
    v = HashingEmbedder().embed(["free prize call now", "FREE prize, call now!", "see you at lunch tomorrow"])
    assert float(v[0] @ v[1]) > 0.9
    assert float(v[0] @ v[2]) < 0.1


def test_hashing_embedder_is_deterministic_across_processes() -> None:
    code = (
        "from learning.core.embedders import HashingEmbedder;"
        "print(HashingEmbedder().embed(['spam spam eggs']).tobytes().hex())"
    )
    # A fresh interpreter has a different str-hash salt: equal output proves no salted hash is involved.
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == HashingEmbedder().embed(["spam spam eggs"]).tobytes().hex()


def test_hashing_embedder_empty_input_and_dim() -> None:
    emb = HashingEmbedder(dim=16)
    assert emb.embed([]).shape == (0, 16)
    assert emb.name == "hashing-v1-16"
    with pytest.raises(ValueError, match="dim must be at least 2"):
        HashingEmbedder(dim=1)


def test_get_embedder_names() -> None:
    hashing = get_embedder("hashing")
    minilm = get_embedder("minilm")
    assert isinstance(hashing, HashingEmbedder)
    assert isinstance(minilm, SentenceTransformerEmbedder)
    assert (minilm.name, minilm.dim) == ("all-MiniLM-L6-v2", 384)
    assert isinstance(hashing, Embedder)
    with pytest.raises(ValueError, match="unknown embedder 'bert'"):
        get_embedder("bert")


def test_sentence_transformer_embedder_does_not_load_on_construction() -> None:
    emb = SentenceTransformerEmbedder(model_dir="/nonexistent")
    assert emb._model is None
    assert emb.embed([]).shape == (0, 384)
