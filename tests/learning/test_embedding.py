"""The embedding service (learning/services/embedding.py): batched, incremental, rerun-safe, cached by hash, and
split into chunk tasks that several workers share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from config.celery import app
from learning import jobs
from learning.core import HashingEmbedder
from learning.models import Embedding, LearningJob
from learning.services import embedding as embedding_module
from learning.services import project_embed_items
from learning.services.embedding import items_embed_chunk, vectors_for_texts
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
    add_items(project, ["a", "b"])
    held = jobs.claim(kind=LearningJob.Kind.EMBED, project_id=project.pk)
    assert held is not None
    assert project_embed_items(project_id=project.pk).skipped is True
    assert embedder.calls == []
    assert Embedding.objects.count() == 0


def test_an_import_of_cached_texts_still_asks_for_a_ranking(project: Any, embedder: CountingEmbedder,
                                                            sent: list[str]) -> None:
    """New items whose texts already have vectors change the pool: the requested pass bumps the generation."""

    add_items(project, ["x", "y"])
    project_embed_items(project_id=project.pk)
    sent.clear()
    add_items(project, ["x"], prefix="again")  # same text, new item: nothing to embed
    jobs.signal(kind=LearningJob.Kind.EMBED, project_id=project.pk)  # what the importer's request does
    result = project_embed_items(project_id=project.pk)
    assert (result.embedded, result.retrain_requested) == (0, True)
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation == 2


def test_seed_query_vectors_go_through_the_cache(db: Any, embedder: CountingEmbedder) -> None:
    first = vectors_for_texts(["free prize", "call now"], embedder)
    second = vectors_for_texts(["call now", "free prize", "new seed"], embedder)
    assert embedder.calls == [["free prize", "call now"], ["new seed"]]
    np.testing.assert_array_equal(first[0], second[1])
    assert second.dtype == np.float32 and second.shape == (3, 384)


# --- chunked embedding: one project's backlog shared by several workers ------------------------------------------


@pytest.fixture
def sent_with_args(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    calls: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append((name, list(args or []))))
    return calls


def _generation(project: Any) -> int:
    return int(LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation)


def test_a_backlog_larger_than_a_chunk_is_sent_as_chunk_tasks(
    project: Any, embedder: CountingEmbedder, sent_with_args: list[tuple[str, list[Any]]], settings: Any,
) -> None:
    settings.SIFT_EMBED_CHUNK = 10
    add_items(project, [f"message {i}" for i in range(25)])
    ids = sorted(project.items.values_list("pk", flat=True))
    result = project_embed_items(project_id=project.pk)
    assert (result.skipped, result.embedded, result.batches, result.dispatched) == (False, 0, 3, 25)
    assert sent_with_args == [("sift.learning.embed_items", [project.pk, ids[:10]]),
                              ("sift.learning.embed_items", [project.pk, ids[10:20]]),
                              ("sift.learning.embed_items", [project.pk, ids[20:]])]
    # Nothing embedded here, no retrain yet (the chunks ask for it), and the claim is free for the next pass.
    assert embedder.calls == [] and Embedding.objects.count() == 0
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED)
    assert job.running_token is None


def test_the_chunk_that_completes_the_pool_asks_for_the_retrain(
    project: Any, embedder: CountingEmbedder, sent_with_args: list[tuple[str, list[Any]]], settings: Any,
) -> None:
    settings.SIFT_EMBED_CHUNK = 10
    add_items(project, [f"message {i}" for i in range(25)])
    project_embed_items(project_id=project.pk)
    chunks = [args[1] for _, args in sent_with_args]
    sent_with_args.clear()
    before = _generation(project)
    # Chunks may run in any order on any worker; run the last one first.
    first = items_embed_chunk(project_id=project.pk, item_ids=chunks[2], batch_size=4)
    assert (first.embedded, first.batches, first.retrain_requested) == (5, 2, False)
    assert _generation(project) == before + 2  # one bump per committed batch
    items_embed_chunk(project_id=project.pk, item_ids=chunks[0])
    assert sent_with_args == []
    last = items_embed_chunk(project_id=project.pk, item_ids=chunks[1])
    assert (last.embedded, last.retrain_requested) == (10, True)
    assert sent_with_args == [("sift.learning.retrain_project", [project.pk])]
    assert Embedding.objects.filter(embedder="hashing-v1-384").count() == 25
    assert sorted(t for call in embedder.calls for t in call) == sorted(f"message {i}" for i in range(25))


def test_an_embed_items_task_run_twice_embeds_once(
    project: Any, embedder: CountingEmbedder, sent_with_args: list[tuple[str, list[Any]]],
) -> None:
    from learning import tasks

    add_items(project, ["a", "b", "c"])
    ids = sorted(project.items.values_list("pk", flat=True))
    assert tasks.embed_items.apply(args=[project.pk, ids]).get() == {
        "embedded": 3, "batches": 1, "retrain_requested": True}
    generation = _generation(project)
    stored = sorted(Embedding.objects.values_list("content_hash", "vector"))
    # The redelivery finds every vector in place: no embedding, no new generation, no second retrain request.
    assert tasks.embed_items.apply(args=[project.pk, ids]).get() == {
        "embedded": 0, "batches": 0, "retrain_requested": False}
    assert embedder.calls == [["a", "b", "c"]]
    assert sorted(Embedding.objects.values_list("content_hash", "vector")) == stored
    assert _generation(project) == generation
    assert sent_with_args == [("sift.learning.retrain_project", [project.pk])]
    assert app.amqp.router.route({}, "sift.learning.embed_items")["queue"].name == "embedding"


def test_a_chunk_ignores_ids_of_other_projects_and_of_deleted_projects(
    db: Any, embedder: CountingEmbedder, sent_with_args: list[tuple[str, list[Any]]],
) -> None:
    mine = ProjectFactory(slug="mine", taxonomy=SMS_TAXONOMY, embedder="hashing")
    other = ProjectFactory(slug="other", taxonomy=SMS_TAXONOMY, embedder="hashing")
    add_items(mine, ["mine"])
    add_items(other, ["theirs"])
    foreign = list(other.items.values_list("pk", flat=True))
    assert items_embed_chunk(project_id=mine.pk, item_ids=foreign).embedded == 0
    assert items_embed_chunk(project_id=10**9, item_ids=foreign).embedded == 0
    assert embedder.calls == [] and Embedding.objects.count() == 0
