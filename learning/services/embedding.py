"""Embedding: fill the (embedder, content hash) vector cache for a project's items, batch by batch.

Rerun-safety: every batch commits on its own, and a batch only ever looks for items whose hash has no vector
yet, so a run killed half-way leaves the finished batches in place and the next run continues with the rest.
Two runs racing on one text (two projects importing the same message) both insert with ON CONFLICT DO
NOTHING: one vector survives, nothing fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from labeling.models import Item, Project
from learning import scheduling
from learning.core import Embedder, content_hash, get_embedder
from learning.models import Embedding, LearningJob

logger = logging.getLogger(__name__)

# One embedder instance per worker process and name: MiniLM takes seconds to load and stays warm between tasks.
_EMBEDDERS: dict[str, Embedder] = {}


def embedder_for(name: str) -> Embedder:
    """The project's embedder setting ("minilm", "hashing") as a warm, per-process instance."""
    if name not in _EMBEDDERS:
        _EMBEDDERS[name] = get_embedder(name)
    return _EMBEDDERS[name]


def encode_vectors(vectors: np.ndarray) -> list[bytes]:
    """float16 little-endian bytes per row: the stored form (768 bytes for 384 dimensions)."""
    half = np.asarray(vectors, dtype="<f2")
    return [row.tobytes() for row in half]


def store_vectors(*, embedder_name: str, hashes: Sequence[str], vectors: np.ndarray) -> int:
    """Insert vectors for ``hashes``; existing (embedder, hash) rows are left as they are. Returns rows sent."""
    rows = [
        Embedding(embedder=embedder_name, content_hash=h, vector=blob)
        for h, blob in zip(hashes, encode_vectors(vectors), strict=True)
    ]
    Embedding.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)


def vectors_for_texts(texts: Sequence[str], embedder: Embedder) -> np.ndarray:
    """float32 vectors for arbitrary texts (seed queries), through the same cache: cached hashes are not
    embedded again, new ones are embedded and stored."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    hashes = [content_hash(t) for t in texts]
    cached = {
        h: np.frombuffer(bytes(v), dtype="<f2")
        for h, v in Embedding.objects.filter(embedder=embedder.name, content_hash__in=set(hashes))
        .values_list("content_hash", "vector")
    }
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}
    if missing:
        new = embedder.embed(list(missing.values()))
        store_vectors(embedder_name=embedder.name, hashes=list(missing), vectors=new)
        for h, row in zip(missing, np.asarray(new, dtype="<f2"), strict=True):
            cached[h] = row
    return np.stack([cached[h] for h in hashes]).astype(np.float32)


def _missing_batch(project_id: int, embedder_name: str, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    """The next ``limit`` items (by id, after ``after_id``) whose content hash has no vector for the embedder."""
    item = connection.ops.quote_name(Item._meta.db_table)
    emb = connection.ops.quote_name(Embedding._meta.db_table)
    query = (
        f"SELECT i.id, i.content_hash, i.text FROM {item} i "  # noqa: S608 (table names only)
        f"WHERE i.project_id = %s AND i.id > %s AND NOT EXISTS ("
        f"SELECT 1 FROM {emb} e WHERE e.embedder = %s AND e.content_hash = i.content_hash) "
        f"ORDER BY i.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [project_id, after_id, embedder_name, limit])
        return [(int(r[0]), str(r[1]), str(r[2])) for r in cursor.fetchall()]


@dataclass(frozen=True)
class EmbedResult:
    """What one embedding run did. ``skipped`` means another run held the claim and this one did nothing."""

    skipped: bool = False
    embedded: int = 0
    batches: int = 0
    seconds: float = 0.0
    retrain_requested: bool = False


def project_embed_items(*, project_id: int, batch_size: int | None = None) -> EmbedResult:
    """Embed every item of the project whose content hash has no vector for the project's embedder.

    Claims the project's embed job (learning/scheduling.py), embeds in batches of ``batch_size`` distinct
    hashes, committing each, then asks for a retrain (which gives a cold-start ranking before any label) when
    this pass embedded something or was requested by an import.
    """
    started = time.perf_counter()
    job = scheduling.claim(kind=LearningJob.Kind.EMBED, project_id=project_id)
    if job is None:
        return EmbedResult(skipped=True)
    size: int = batch_size if batch_size is not None else int(getattr(settings, "SIFT_EMBED_BATCH", 256))
    embedded = batches = 0
    error = ""
    completed = False
    try:
        embedder_setting = Project.objects.filter(pk=project_id).values_list("embedder", flat=True).first()
        if embedder_setting is None:
            error = "project no longer exists"
            return EmbedResult(seconds=time.perf_counter() - started)
        embedder = embedder_for(embedder_setting)
        after_id = 0
        while True:
            rows = _missing_batch(project_id, embedder.name, after_id, size)
            if not rows:
                break
            after_id = rows[-1][0]
            # The same text may occur on many items: embed each hash once.
            texts = {h: t for _, h, t in rows}
            vectors = embedder.embed(list(texts.values()))
            with transaction.atomic():
                store_vectors(embedder_name=embedder.name, hashes=list(texts), vectors=vectors)
            embedded += len(texts)
            batches += 1
            if not scheduling.heartbeat(job):
                error = "claim lost (taken over as stale); stopped after a committed batch"
                logger.warning("embed run for project %s lost its claim; stopping", project_id)
                return EmbedResult(embedded=embedded, batches=batches, seconds=time.perf_counter() - started)
        completed = True
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        scheduling.release(job, error=error, completed=completed and (embedded > 0 or job.requested))
    retrain = completed and (embedded > 0 or job.requested)
    if retrain:
        # The pool changed (new vectors, or new items whose texts were cached already): rank it again.
        scheduling.signal(kind=LearningJob.Kind.RETRAIN, project_id=project_id)
    logger.info("embedded %d texts for project %s in %d batches", embedded, project_id, batches)
    return EmbedResult(embedded=embedded, batches=batches, seconds=time.perf_counter() - started,
                       retrain_requested=retrain)
