"""The demo sample's precomputed MiniLM vectors (labeling/fixtures/demo/sms_vectors.npz, build_vectors.py): what
the file holds, what load_demo does with it, and (with the real model) that the vectors are MiniLM's."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.cache import cache
from django.core.management import call_command

from labeling.management.commands.load_demo import DEMO_DIR, SEED_QUERIES, VECTORS_FILE
from labeling.models import Project
from labeling.services.privacy import items_delete
from learning.core.embedders import MINILM_DIM, MINILM_NAME
from learning.core.vocabulary import content_hash
from learning.models import Embedding, LearningJob
from learning.services.embedding import embedding_progress


def fixture_texts() -> list[str]:
    texts = []
    for name in ("sms_items.jsonl.gz", "sms_gold.jsonl.gz"):
        with gzip.open(DEMO_DIR / name, "rt", encoding="utf-8") as lines:
            texts += [json.loads(line)["text"] for line in lines]
    return texts


def shipped() -> tuple[str, list[str], np.ndarray]:
    with np.load(DEMO_DIR / VECTORS_FILE, allow_pickle=False) as data:
        return str(data["embedder"]), [str(h) for h in data["hashes"]], np.asarray(data["vectors"])


def test_the_file_holds_one_minilm_vector_per_sample_text_and_seed_query() -> None:
    name, hashes, vectors = shipped()
    texts = fixture_texts()
    assert name == MINILM_NAME
    assert vectors.dtype == np.dtype("<f2") and vectors.shape == (len(hashes), MINILM_DIM)
    assert set(hashes) == {content_hash(t) for t in texts} | {content_hash(q.strip()) for q in SEED_QUERIES}
    assert len(hashes) == len(set(hashes)) == 1_534
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert (DEMO_DIR / VECTORS_FILE).stat().st_size < 1_300_000


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings.DATA_DIR = tmp_path
    monkeypatch.delenv("SIFT_DEMO_PASSWORD", raising=False)
    cache.clear()
    return tmp_path


def load_demo() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def progress(project: Project) -> tuple[int, int]:
    figures = embedding_progress([(project.pk, project.embedder, project.created_at)])[project.pk]
    return figures.total, figures.embedded


@pytest.mark.django_db
def test_load_demo_leaves_every_item_embedded_once(data_dir: Path) -> None:
    load_demo()
    project = Project.objects.get(slug="sms-demo")
    assert project.embedder == "minilm"
    assert progress(project) == (1_530, 1_530)
    assert Embedding.objects.filter(embedder=MINILM_NAME).count() == 1_534  # the texts and the seed queries
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED)
    generation = job.generation

    load_demo()  # a restart: nothing new to store, and the pool generation stays
    assert Embedding.objects.filter(embedder=MINILM_NAME).count() == 1_534
    assert LearningJob.objects.get(pk=job.pk).generation == generation


@pytest.mark.django_db
def test_a_restart_does_not_bring_back_a_deleted_items_vector(data_dir: Path) -> None:
    load_demo()
    project = Project.objects.get(slug="sms-demo")
    deleted = project.items.get(external_id="sms-297").content_hash
    items_delete(actor=None, project=project, external_ids=["sms-297"], reason="subject request")
    assert not Embedding.objects.filter(content_hash=deleted).exists()

    load_demo()

    assert not Embedding.objects.filter(content_hash=deleted).exists()
    assert progress(project) == (1_529, 1_529)


@pytest.mark.django_db
def test_load_demo_stores_nothing_for_a_project_that_embeds_with_another_tier(data_dir: Path) -> None:
    load_demo()
    Embedding.objects.all().delete()
    Project.objects.filter(slug="sms-demo").update(embedder="hashing")
    load_demo()
    assert Embedding.objects.count() == 0  # the worker embeds with the project's own tier


@pytest.mark.minilm
def test_the_shipped_vectors_are_what_the_worker_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real embeddings: a sample of the shipped rows against the packaged MiniLM, as the worker runs it."""
    from learning.core import get_embedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _name, hashes, vectors = shipped()
    row = {h: i for i, h in enumerate(hashes)}
    texts = fixture_texts()[::97] + [q.strip() for q in SEED_QUERIES]
    live = get_embedder("minilm").embed(texts)
    stored = vectors[[row[content_hash(t)] for t in texts]].astype(np.float32)
    cosines = np.sum(live * stored, axis=1)
    assert cosines.min() > 0.999
    np.testing.assert_allclose(stored, live, atol=2e-3)  # float16 rounding and torch kernels, nothing more


@pytest.mark.django_db
def test_no_vectors_leaves_the_embedding_to_the_worker(data_dir: Path) -> None:
    call_command("load_demo", "--no-vectors", stdout=io.StringIO())
    project = Project.objects.get(slug="sms-demo")
    assert progress(project) == (1_530, 0)
    assert Embedding.objects.count() == 0
