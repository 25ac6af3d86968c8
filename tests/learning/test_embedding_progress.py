"""Embedding progress (learning/services/embedding.py ``embedding_progress``), the status built on it
(learning/api.py ``embedding_status``, ``GET /api/projects/{slug}/embedding/``) and the precomputed-vector
preload the demo uses (``vectors_preload``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.cache import cache
from django.utils import timezone

from config.celery import app
from labeling.models import Project
from learning import scheduling
from learning.api import EmbeddingState, embedding_status
from learning.core import HashingEmbedder
from learning.core.vocabulary import content_hash
from learning.models import Embedding, LearningJob, ModelVersion
from learning.services.embedding import (
    PROGRESS_TTL_PENDING,
    PROGRESS_TTL_SETTLED,
    embedding_progress,
    items_embed_chunk,
    vectors_preload,
)
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory
from tests.learning.support import add_items, embed_items

URL = "/api/projects/{slug}/embedding/"
HASHING = "hashing-v1-384"


@pytest.fixture(autouse=True)
def _clean_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    return calls


def project_ref(project: Project) -> tuple[int, str, Any]:
    return project.pk, project.embedder, project.created_at


def progress_of(project: Project) -> tuple[int, int, int]:
    figures = embedding_progress([project_ref(project)])[project.pk]
    return figures.total, figures.embedded, figures.pending


def test_progress_is_exact_for_n_items_of_which_m_are_embedded(db: Any) -> None:
    project = ProjectFactory(slug="prog", taxonomy=SMS_TAXONOMY, embedder="hashing")
    # 7 items, two of them with the same text: 6 hashes. 3 items (2 hashes: the shared one and another) embedded.
    items = add_items(project, ["a", "b", "c", "d", "e", "f", "a"])
    embed_items([items[0], items[1]])
    # A vector of another embedder and another project's embedded item do not count.
    Embedding.objects.create(embedder="other-model", content_hash=items[2].content_hash, vector=b"\0\0")
    other = ProjectFactory(slug="prog-other", taxonomy=SMS_TAXONOMY, embedder="hashing")
    embed_items(add_items(other, ["zzz"]))
    assert progress_of(project) == (7, 3, 4)
    assert progress_of(other) == (1, 1, 0)


def test_an_empty_project_and_a_missing_one(db: Any) -> None:
    project = ProjectFactory(slug="prog-empty", taxonomy=SMS_TAXONOMY, embedder="hashing")
    assert progress_of(project) == (0, 0, 0)
    assert embedding_progress([]) == {}


def test_the_figure_follows_each_committed_chunk_batch(db: Any, sent: list[str]) -> None:
    """The cache key carries the embed job's generation, which every committed batch moves: no stale figure."""
    project = ProjectFactory(slug="prog-chunk", taxonomy=SMS_TAXONOMY, embedder="hashing")
    items = add_items(project, [f"message {i}" for i in range(10)])
    assert progress_of(project) == (10, 0, 10)
    items_embed_chunk(project_id=project.pk, item_ids=[i.pk for i in items[:4]], batch_size=2)
    assert progress_of(project) == (10, 4, 6)
    items_embed_chunk(project_id=project.pk, item_ids=[i.pk for i in items], batch_size=100)
    assert progress_of(project) == (10, 10, 0)
    # The last batch leaves nothing pending: the retrain, and the clustering of the newly embedded items.
    assert sent == ["sift.learning.retrain_project", "sift.learning.cluster_project"]


def test_figures_are_cached_between_job_state_changes(db: Any, django_assert_num_queries: Any) -> None:
    project = ProjectFactory(slug="prog-cache", taxonomy=SMS_TAXONOMY, embedder="hashing")
    items = add_items(project, ["x", "y", "z"])
    assert progress_of(project) == (3, 0, 3)
    embed_items(items)  # written behind the service's back: no job state moved, so the cached figure stands
    assert progress_of(project) == (3, 0, 3)
    job = LearningJob.objects.create(project=project, kind=LearningJob.Kind.EMBED, generation=1)  # a pass ended
    assert progress_of(project) == (3, 3, 0)

    # Settled and idle: "all embedded" is reused, the total read from the item-count ledger (exact), so a hard
    # deletion shows at once without a recount; with the caller's totals, the job states are the only query.
    project.items.filter(pk=items[0].pk).delete()
    with django_assert_num_queries(2):
        assert progress_of(project) == (2, 2, 0)
    with django_assert_num_queries(1):
        figures = embedding_progress([project_ref(project)], {project.pk: 2})[project.pk]
    assert (figures.total, figures.embedded) == (2, 2)

    # New items come with an embed request (the import's), which moves the key: counted again.
    add_items(project, ["new"], prefix="new")
    LearningJob.objects.filter(pk=job.pk).update(dirty=True, requested_at=timezone.now())
    assert progress_of(project) == (3, 2, 1)


def test_all_embedded_while_a_request_is_pending_is_not_kept_for_long(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request already pending is not written again by the next import, so the key would not move: while the
    job is not idle, even an all-embedded figure lives only PROGRESS_TTL_PENDING seconds."""
    stored: list[tuple[object, object]] = []
    real_set = cache.set

    def recording_set(key: str, value: object, timeout: float | None = None) -> None:
        stored.append((value, timeout))
        real_set(key, value, timeout)

    monkeypatch.setattr(cache, "set", recording_set)
    busy = ProjectFactory(slug="prog-busy", taxonomy=SMS_TAXONOMY, embedder="hashing")
    embed_items(add_items(busy, ["x"]))
    LearningJob.objects.create(project=busy, kind=LearningJob.Kind.EMBED, generation=1, dirty=True,
                               requested_at=timezone.now(), queued_at=timezone.now())
    assert progress_of(busy) == (1, 1, 0)
    idle = ProjectFactory(slug="prog-idle", taxonomy=SMS_TAXONOMY, embedder="hashing")
    embed_items(add_items(idle, ["y"], prefix="idle"))
    LearningJob.objects.create(project=idle, kind=LearningJob.Kind.EMBED, generation=1)
    assert progress_of(idle) == (1, 1, 0)
    assert stored == [([1, 1], PROGRESS_TTL_PENDING), ("settled", PROGRESS_TTL_SETTLED)]


def test_queries_do_not_grow_with_projects(db: Any, django_assert_num_queries: Any) -> None:
    projects = [ProjectFactory(slug=f"prog-{n}", taxonomy=SMS_TAXONOMY, embedder="hashing") for n in range(4)]
    for n, project in enumerate(projects):
        add_items(project, [f"p{n} {i}" for i in range(n + 1)])
    # The embed jobs' states, then one grouped count for the one embedder among them.
    with django_assert_num_queries(2):
        figures = embedding_progress([project_ref(p) for p in projects])
    assert [figures[p.pk].total for p in projects] == [1, 2, 3, 4]
    with django_assert_num_queries(1):  # all cached: the states only
        embedding_progress([project_ref(p) for p in projects])


@pytest.mark.parametrize(
    ("n_items", "n_embedded", "version", "state", "message"),
    [
        (0, 0, None, EmbeddingState.EMPTY, "No items yet: import some to start."),
        (1530, 600, None, EmbeddingState.EMBEDDING,
         "Embedding 600 of 1,530 items (hashing). Until the first model is trained, the queue serves items in "
         "random order."),
        (1530, 1530, None, EmbeddingState.TRAINING, "All 1,530 items are embedded; training the first model."),
        (1530, 1530, 3, EmbeddingState.READY, ""),
        (1530, 1000, 3, EmbeddingState.EMBEDDING,
         "Embedding new items: 1,000 of 1,530 embedded (hashing). They join the ranking at the next retrain."),
    ],
)
def test_status_states_and_messages(db: Any, n_items: int, n_embedded: int, version: int | None, state: str,
                                    message: str) -> None:
    project = ProjectFactory(slug="prog-state", taxonomy=SMS_TAXONOMY, embedder="hashing")
    items = add_items(project, [f"text {i}" for i in range(n_items)])
    embed_items(items[:n_embedded])
    status = embedding_status([project_ref(project)], {project.pk: version} if version else {})[project.pk]
    assert status.as_dict() == {"state": state, "embedder": "hashing", "total": n_items, "embedded": n_embedded,
                                "pending": n_items - n_embedded, "model_version": version, "message": message}


def test_the_endpoint_answers_members_only(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    Project.objects.filter(pk=project.pk).update(embedder="hashing")
    items = add_items(project, ["one", "two", "three"])
    embed_items(items[:1])
    ModelVersion.objects.create(project=project, version=2, status="active", fingerprint="fp", embedder=HASHING,
                                strategy="margin_exploit")
    response = api_as(cast["users"]["reviewer"]).get(URL.format(slug="sms"))
    assert response.status_code == 200
    assert response.json() == {
        "state": "embedding", "embedder": "hashing", "total": 3, "embedded": 1, "pending": 2, "model_version": 2,
        "message": "Embedding new items: 1 of 3 embedded (hashing). They join the ranking at the next retrain."}
    assert api_as(cast["users"]["outsider"]).get(URL.format(slug="sms")).status_code == 404
    assert api_as(None).get(URL.format(slug="sms")).status_code in {401, 403}


def test_the_endpoint_is_in_the_schema(cast: dict[str, Any], api_as: Any) -> None:
    schema = api_as(cast["users"]["reviewer"]).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/projects/{slug}/embedding/"]["get"]
    assert operation["operationId"] == "project_embedding_status"
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {
        "state", "embedder", "total", "embedded", "pending", "model_version", "message"}


# --- Precomputed vectors ------------------------------------------------------------------------------------


def write_vectors(path: Path, texts: list[str], *, embedder: str = HASHING, dim: int = 384) -> Path:
    vectors = HashingEmbedder(dim).embed(texts).astype("<f2")
    np.savez_compressed(path, embedder=np.array(embedder), hashes=np.array([content_hash(t) for t in texts],
                                                                            dtype="<U64"), vectors=vectors)
    return path


def test_preload_stores_the_vectors_of_the_projects_items_and_seeds_once(
        db: Any, tmp_path: Path, sent: list[str], django_capture_on_commit_callbacks: Any) -> None:
    project = ProjectFactory(slug="pre", taxonomy=SMS_TAXONOMY, embedder="hashing", seed_queries=["  seed one "])
    add_items(project, ["alpha", "beta", "gamma"])
    Embedding.objects.create(embedder=HASHING, content_hash=content_hash("gamma"), vector=b"kept")
    path = write_vectors(tmp_path / "v.npz", ["alpha", "beta", "gamma", "seed one", "not an item"])
    before = Embedding.objects.count()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert vectors_preload(project_id=project.pk, path=path) == 3  # alpha, beta and the seed; gamma had one
    assert len(callbacks) == 1  # the embed request, sent once the vectors committed
    stored = dict(Embedding.objects.filter(embedder=HASHING).values_list("content_hash", "vector"))
    assert set(stored) == {content_hash(t) for t in ["alpha", "beta", "gamma", "seed one"]}
    assert bytes(stored[content_hash("gamma")]) == b"kept"
    np.testing.assert_array_equal(np.frombuffer(bytes(stored[content_hash("beta")]), dtype="<f2"),
                                  HashingEmbedder().embed(["beta"])[0].astype("<f2"))
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED)
    assert (job.generation, job.dirty) == (1, True)  # the pool changed: a new generation, and a pass requested
    assert sent == ["sift.learning.embed_project"]
    assert progress_of(project) == (3, 3, 0)

    # Call twice, effect once.
    assert vectors_preload(project_id=project.pk, path=path) == 0
    assert Embedding.objects.count() == before + 3
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation == 1


def test_preload_ignores_vectors_of_another_embedder(db: Any, tmp_path: Path, sent: list[str]) -> None:
    project = ProjectFactory(slug="pre-other", taxonomy=SMS_TAXONOMY, embedder="hashing")
    add_items(project, ["alpha"])
    for path in (write_vectors(tmp_path / "a.npz", ["alpha"], embedder="all-MiniLM-L6-v2"),
                 write_vectors(tmp_path / "b.npz", ["alpha"], dim=16)):
        assert scheduling.preload_vectors(project_id=project.pk, path=path) == 0
    assert Embedding.objects.count() == 0
    assert not LearningJob.objects.filter(project=project).exists()
    assert sent == []
