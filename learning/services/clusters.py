"""Clustering a project's items into near-duplicate clusters: database -> learning.core.clusters -> ClusterMember.

``project_cluster_items`` is the worker's whole job. It runs after embedding (learning/services/embedding.py
signals it next to the retrain, so paraphrases can be found by their vectors) under the project's coalesced
CLUSTER job claim (learning/jobs.py): one run per project at a time, plus at most one follow-up.

Rerun-safety: an item is clustered when it has a ClusterMember row, and a run only reads items without one, in id
order, committing each batch. A run killed half-way leaves its committed batches, and the next run rebuilds the
index of representatives from their stored signatures (no text is re-read) and continues with the rest: the
outcome is the one a single uninterrupted run would have given (the core's rule depends only on the items and
their order). Gold items are never clustered: they are served by their own rule (labeling/services/gold.py), and
a gold representative would hold its members back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from labeling.models import ClusterMember, Item, Project
from learning import jobs
from learning.core.clusters import ClusterIndex
from learning.models import Embedding, LearningJob
from learning.services.banks import project_match_banks
from learning.services.embedding import embedder_for

logger = logging.getLogger(__name__)

CLUSTER_BATCH = 2000
CLUSTER_RANDOM_STATE = 0  # fixed: a rebuilt index must draw the same permutations as the run that stored them


@dataclass(frozen=True)
class ClusterResult:
    skipped: bool = False
    clustered: int = 0
    representatives: int = 0
    seconds: float = 0.0


def cluster_index() -> ClusterIndex:
    """The index every run and every bank uses: same parameters, same random state."""
    return ClusterIndex(
        jaccard_threshold=float(settings.SIFT_CLUSTER_JACCARD), cosine_threshold=float(settings.SIFT_CLUSTER_COSINE),
        random_state=CLUSTER_RANDOM_STATE)


def _vectors(embedder_name: str, hashes: list[str]) -> dict[str, np.ndarray]:
    rows = Embedding.objects.filter(embedder=embedder_name, content_hash__in=set(hashes)).values_list(
        "content_hash", "vector")
    return {h: np.frombuffer(bytes(blob), dtype="<f2").astype(np.float32) for h, blob in rows}


def _load_representatives(index: ClusterIndex, project_id: int, embedder_name: str) -> None:
    table, item_table = ClusterMember._meta.db_table, Item._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.item_id, c.exact_key, c.minhash, i.content_hash FROM {table} c "  # noqa: S608 (table names)
            f"JOIN {item_table} i ON i.id = c.item_id "
            "WHERE c.project_id = %s AND c.kind = 'representative' ORDER BY c.item_id", [project_id])
        rows = cursor.fetchall()
    for start in range(0, len(rows), CLUSTER_BATCH):
        part = rows[start : start + CLUSTER_BATCH]
        vectors = _vectors(embedder_name, [h for *_, h in part])
        for item_id, key, blob, content_hash in part:
            index.add_representative(item_id, index.signature_from_bytes(key, bytes(blob)),
                                     vectors.get(content_hash))


def _pending(project_id: int, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    return list(Item.objects.filter(project_id=project_id, pk__gt=after_id, is_gold=False, cluster__isnull=True)
                .order_by("pk").values_list("pk", "text", "content_hash")[:limit])


def project_cluster_items(*, project_id: int, owner: str = "", batch_size: int = CLUSTER_BATCH) -> ClusterResult:
    """Cluster every not-yet-clustered item of the project (see the module docstring). Idempotent."""
    started = time.perf_counter()
    job = jobs.claim(kind=LearningJob.Kind.CLUSTER, project_id=project_id, owner=owner)
    if job is None:
        return ClusterResult(skipped=True)
    clustered = founded = 0
    new_item_ids: list[int] = []
    error = ""
    completed = False
    try:
        setting = Project.objects.filter(pk=project_id).values_list("embedder", flat=True).first()
        if setting is None:
            error = "project no longer exists"
            return ClusterResult(seconds=time.perf_counter() - started)
        embedder_name = embedder_for(setting).name
        index = cluster_index()
        with jobs.heartbeating(job):
            _load_representatives(index, project_id, embedder_name)
            after_id = 0
            while rows := _pending(project_id, after_id, batch_size):
                after_id = rows[-1][0]
                vectors = _vectors(embedder_name, [h for *_, h in rows])
                assignments = index.assign([r[0] for r in rows], [r[1] for r in rows],
                                           [vectors.get(r[2]) for r in rows])
                with transaction.atomic():
                    # ignore_conflicts: a row written meanwhile (a claim taken over as stale) is kept as it is.
                    ClusterMember.objects.bulk_create([
                        ClusterMember(item_id=a.item_id, project_id=project_id, representative_id=a.representative_id,
                                      kind=a.kind, similarity=a.similarity, exact_key=a.signature.exact_key,
                                      minhash=a.signature.to_bytes())
                        for a in assignments], ignore_conflicts=True)
                clustered += len(assignments)
                founded += sum(a.kind == "representative" for a in assignments)
                new_item_ids.extend(a.item_id for a in assignments)
            # Match banks: the new signatures against every entry, every signature against new entries.
            project_match_banks(project_id=project_id, new_item_ids=new_item_ids)
        completed = True
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        jobs.release(job, error=error, completed=completed)
    logger.info("project %s: clustered %d items (%d new clusters)", project_id, clustered, founded)
    return ClusterResult(clustered=clustered, representatives=founded, seconds=time.perf_counter() - started)
