"""Embedders: the hash key, the hashing embedder's promises, the registry, length ordering, thread pinning, and
the static tier's inference over a small hand-made table (no model needed; the real distillation is in
test_minilm.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learning.core.embedder_registry import EMBEDDER_NAMES, STATIC_DEFAULT_FROM, get_embedder, recommended_embedder
from learning.core.embedders import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    length_order,
    minilm_model_dir,
    resolve_num_threads,
)
from learning.core.static_embedder import StaticEmbedder, default_model_cache_dir


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
    static = get_embedder("static", model_cache_dir="/nonexistent")
    assert isinstance(static, StaticEmbedder)
    assert (static.name, static.dim) == ("m2v-all-MiniLM-L6-v2-pca256-v1", 256)
    assert static.model_path == Path("/nonexistent/m2v-all-MiniLM-L6-v2-pca256-v1")
    assert isinstance(static, Embedder)
    assert EMBEDDER_NAMES == ("minilm", "static", "multilingual", "hashing")


def test_recommended_embedder_switches_to_the_static_tier_for_large_pools() -> None:
    assert recommended_embedder(0) == "minilm"
    assert recommended_embedder(STATIC_DEFAULT_FROM - 1) == "minilm"
    assert recommended_embedder(STATIC_DEFAULT_FROM) == "static"
    assert recommended_embedder(1_000_000) == "static"


def test_length_order_sorts_stably_and_restores_the_input_order() -> None:
    texts = ["ccc", "a", "bb", "", "dd", "e"]
    order = length_order(texts)
    assert order.tolist() == [3, 1, 5, 2, 4, 0]  # ties keep input order: "a" before "e", "bb" before "dd"
    # What the embedders do: work on the sorted texts, write each result back to its original position.
    results = np.array([len(texts[i]) * 10 + i for i in order])
    restored = np.empty_like(results)
    restored[order] = results
    assert restored.tolist() == [len(t) * 10 + i for i, t in enumerate(texts)]
    assert length_order([]).tolist() == []


def test_resolve_num_threads_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIFT_WORKER_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_num_threads() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_num_threads() == 3
    monkeypatch.setenv("SIFT_WORKER_THREADS", "1")  # the worker's own setting wins over the BLAS variable
    assert resolve_num_threads() == 1
    assert resolve_num_threads(2) == 2  # an explicit value wins over both
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        resolve_num_threads(0)
    monkeypatch.setenv("SIFT_WORKER_THREADS", "two")
    with pytest.raises(ValueError, match="SIFT_WORKER_THREADS must be a whole number"):
        resolve_num_threads()


def test_default_model_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIFT_MODEL_CACHE", raising=False)
    monkeypatch.setenv("SIFT_DATA_DIR", "/srv/sift")
    assert default_model_cache_dir() == Path("/srv/sift/models")
    monkeypatch.setenv("SIFT_MODEL_CACHE", "/cache/models")
    assert default_model_cache_dir() == Path("/cache/models")


def _tiny_table(cache: Path, name: str, dims: int = 4) -> tuple[dict[str, int], np.ndarray]:
    """A hand-made static table over MiniLM's real tokenizer (from the package, on disk): row i = token id i."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(vocab), dims)).astype(np.float32)
    target = cache / name
    target.mkdir(parents=True)
    save_file({"embeddings": table}, str(target / "model.safetensors"))
    tokenizer.save(str(target / "tokenizer.json"))
    return vocab, table


def test_static_embedder_sums_token_rows_and_keeps_the_protocol(tmp_path: Path) -> None:
    vocab, table = _tiny_table(tmp_path, "tiny", dims=4)
    emb = StaticEmbedder(tmp_path, dims=4, name="tiny")
    assert emb._table is None  # nothing is loaded on construction
    texts = ["free prize", "prize free free", "", "\u2603\u2603"]
    vectors = emb.embed(texts)
    assert vectors.shape == (4, 4) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.ones(4), atol=1e-6)
    free, prize = table[vocab["free"]], table[vocab["prize"]]
    np.testing.assert_allclose(vectors[0], (free + prize) / np.linalg.norm(free + prize), atol=1e-6)
    np.testing.assert_allclose(vectors[1], (2 * free + prize) / np.linalg.norm(2 * free + prize), atol=1e-6)
    # No token (empty) and only unknown tokens (the [UNK] row is zeroed) both map to the first basis vector.
    assert vectors[2].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert vectors[3].tolist() == [1.0, 0.0, 0.0, 0.0]
    # Order and batch composition do not change a text's vector.
    np.testing.assert_allclose(emb.embed(texts[::-1]), vectors[::-1], atol=1e-6)
    assert emb.embed([]).shape == (0, 4)


def test_static_embedder_refuses_a_table_of_the_wrong_width(tmp_path: Path) -> None:
    _tiny_table(tmp_path, "narrow", dims=3)
    with pytest.raises(ValueError, match=r"expected \(\*, 4\)"):
        StaticEmbedder(tmp_path, dims=4, name="narrow").embed(["hello"])


def test_sentence_transformer_embedder_does_not_load_on_construction() -> None:
    emb = SentenceTransformerEmbedder(model_dir="/nonexistent")
    assert emb._model is None
    assert emb.embed([]).shape == (0, 384)
