"""The embedding service (learning/services/embedding.py): batched, incremental, rerun-safe, cached by hash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from config.celery import app
from learning.core import HashingEmbedder
from learning.models import Embedding, LearningJob
from learning.services import embedding as embedding_module
from learning.services import project_embed_items
from learning.services.embedding import vectors_for_texts
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory
from tests.learning.support import add_items


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, recording every text it is asked to embed; optionally dies after N batches."""

    def __init__(self, fail_after_batches: int | None = None) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.fail_after_batches = fail_after_batches

    def embed(self, texts: Sequence[str]) -> Any:
        if self.fail_after_batches is not None and len(self.calls) == self.fail_after_batches:
            raise MemoryError("worker killed")
        self.calls.append(list(texts))
        return super().embed(texts)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    return calls


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    counting = CountingEmbedder()
    monkeypatch.setitem(embedding_module._EMBEDDERS, "hashing", counting)
    return counting


@pytest.fixture
def project(db: Any) -> Any:
    return ProjectFactory(slug="emb", taxonomy=SMS_TAXONOMY, embedder="hashing")


def test_embeds_each_missing_hash_once_in_batches(project: Any, embedder: CountingEmbedder, sent: list[str]) -> None:
    texts = [f"message {i}" for i in range(25)] + ["message 0", "message 1"]  # two duplicate texts
    add_items(project, texts)
    result = project_embed_items(project_id=project.pk, batch_size=10)
    assert (result.skipped, result.embedded, result.batches, result.retrain_requested) == (False, 25, 3, True)
    assert sorted(t for call in embedder.calls for t in call) == sorted(f"message {i}" for i in range(25))
    assert Embedding.objects.filter(embedder="hashing-v1-384").count() == 25
    # Stored as float16 and equal to the embedder's output up to float16 rounding.
    stored = Embedding.objects.get(content_hash=project.items.get(external_id="item-3").content_hash)
    vector = np.frombuffer(bytes(stored.vector), dtype="<f2")
    assert vector.shape == (384,)
    np.testing.assert_allclose(vector.astype(np.float32), HashingEmbedder().embed(["message 3"])[0], atol=1e-3)
    assert sent == ["sift.learning.retrain_project"]
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation == 1


def test_a_killed_run_is_continued_by_the_next_one(project: Any, monkeypatch: pytest.MonkeyPatch,
                                                  sent: list[str]) -> None:
    add_items(project, [f"text {i}" for i in range(30)])
    dying = CountingEmbedder(fail_after_batches=2)
    monkeypatch.setitem(embedding_module._EMBEDDERS, "hashing", dying)
    with pytest.raises(MemoryError):
        project_embed_items(project_id=project.pk, batch_size=10)
    # The two finished batches were committed; the claim was released; no retrain for a half-embedded pool.
    assert Embedding.objects.count() == 20
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED)
    assert (job.running_token, job.generation, job.last_error) == (None, 0, "MemoryError: worker killed")
    assert sent == []

    fresh = CountingEmbedder()
    monkeypatch.setitem(embedding_module._EMBEDDERS, "hashing", fresh)
    result = project_embed_items(project_id=project.pk, batch_size=10)
    assert result.embedded == 10
    assert sorted(t for call in fresh.calls for t in call) == sorted(f"text {i}" for i in range(20, 30))
    assert Embedding.objects.count() == 30
    assert sent == ["sift.learning.retrain_project"]


def test_texts_cached_by_another_project_are_not_embedded_again(db: Any, embedder: CountingEmbedder,
                                                                sent: list[str]) -> None:
    first = ProjectFactory(slug="first", taxonomy=SMS_TAXONOMY, embedder="hashing")
    second = ProjectFactory(slug="second", taxonomy=SMS_TAXONOMY, embedder="hashing")
    add_items(first, ["shared a", "shared b", "only first"])
    add_items(second, ["shared a", "shared b", "only second"])
    project_embed_items(project_id=first.pk)
    embedder.calls.clear()
    result = project_embed_items(project_id=second.pk)
    assert result.embedded == 1
    assert embedder.calls == [["only second"]]
    assert Embedding.objects.count() == 4


def test_a_run_finds_the_claim_taken_and_does_nothing(project: Any, embedder: CountingEmbedder,
                                                      sent: list[str]) -> None:
    from learning import scheduling

    add_items(project, ["a", "b"])
    held = scheduling.claim(kind=LearningJob.Kind.EMBED, project_id=project.pk)
    assert held is not None
    assert project_embed_items(project_id=project.pk).skipped is True
    assert embedder.calls == []
    assert Embedding.objects.count() == 0


def test_an_import_of_cached_texts_still_asks_for_a_ranking(project: Any, embedder: CountingEmbedder,
                                                            sent: list[str]) -> None:
    """New items whose texts already have vectors change the pool: the requested pass bumps the generation."""
    from learning import scheduling

    add_items(project, ["x", "y"])
    project_embed_items(project_id=project.pk)
    sent.clear()
    add_items(project, ["x"], prefix="again")  # same text, new item: nothing to embed
    scheduling.signal(kind=LearningJob.Kind.EMBED, project_id=project.pk)  # what the importer's request does
    result = project_embed_items(project_id=project.pk)
    assert (result.embedded, result.retrain_requested) == (0, True)
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation == 2


def test_seed_query_vectors_go_through_the_cache(db: Any, embedder: CountingEmbedder) -> None:
    first = vectors_for_texts(["free prize", "call now"], embedder)
    second = vectors_for_texts(["call now", "free prize", "new seed"], embedder)
    assert embedder.calls == [["free prize", "call now"], ["new seed"]]
    np.testing.assert_array_equal(first[0], second[1])
    assert second.dtype == np.float32 and second.shape == (3, 384)
