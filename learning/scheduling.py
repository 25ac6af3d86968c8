"""The ONE entry point the labeling side may call into learning: the door (``request_*``) and two helper calls.

``request_retrain(project_id)`` is called inside the transaction that commits new labels, and
``request_embedding(project_id)`` inside the one that commits imported items. Both only register a
``transaction.on_commit`` callback: a rolled-back submit never triggers work, and nothing is enqueued while a
transaction is open (the worker could otherwise run before the labels it should learn are visible).

Everything behind the door (the coalescing job state machine, its invariants, the claim the runs hold, the
sweep) lives in learning/jobs.py; the labeling side imports this module and nothing else of learning
(import-linter checks it). Besides the two requests, the door has two calls that write learning's own tables
on labeling's behalf: ``forget_content`` (hard deletion) and ``preload_vectors`` (the demo's sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labeling.models import Item
from learning import jobs
from learning.models import Embedding, LearningJob, ModelVersion


def embedder_names() -> tuple[str, ...]:
    """The embedders a project may name (``Project.embedder``); their home is learning/core/embedder_registry.py.

    Imported here, on first call, so that a web process does not load numpy for a form's choices at start-up."""
    from learning.core.embedder_registry import EMBEDDER_NAMES

    return tuple(EMBEDDER_NAMES)


def request_retrain(*, project_id: int) -> None:
    """Ask for a retrain of ``project_id`` once the current transaction commits (coalesced)."""
    jobs.request(kind=LearningJob.Kind.RETRAIN, project_id=project_id)


def request_embedding(*, project_id: int) -> None:
    """Ask for the project's new items to be embedded once the current transaction commits (coalesced)."""
    jobs.request(kind=LearningJob.Kind.EMBED, project_id=project_id)


def request_clustering(*, project_id: int) -> None:
    """Ask for a clustering pass once the current transaction commits (coalesced): it also matches the project's
    items with bank entries confirmed or imported since the last pass (learning/services/banks.py)."""
    jobs.request(kind=LearningJob.Kind.CLUSTER, project_id=project_id)


def forget_content(*, content_hashes: Sequence[str]) -> int:
    """Delete the cached vectors of these content hashes that no remaining item (of any project) shares.

    Called by hard deletion (labeling/services/privacy.py) inside its transaction, after the items' rows are
    deleted, so the vectors go exactly when the content goes (and stay if the deletion rolls back). The vector
    cache is shared across projects, keyed by (embedder, content hash): a hash another item still has keeps its
    vectors. Returns the number of vectors deleted. Known gap: an embed run already in flight that read the text
    before the delete can still write its vector afterwards (an orphan vector, reachable by no item); closing it
    needs the embedding writer to insert only hashes some item still has.
    """
    wanted = set(content_hashes)
    if not wanted:
        return 0
    kept = set(Item.objects.filter(content_hash__in=wanted).values_list("content_hash", flat=True))
    orphans = sorted(wanted - kept)
    if not orphans:
        return 0
    # Per embedder, so each DELETE walks the (embedder, content_hash) unique index instead of scanning vectors.
    embedders = list(Embedding.objects.values_list("embedder", flat=True).distinct().order_by())
    deleted = 0
    for name in embedders:
        count, _ = Embedding.objects.filter(embedder=name, content_hash__in=orphans).delete()
        deleted += count
    return deleted


def preload_vectors(*, project_id: int, path: Path) -> int:
    """Store precomputed vectors for the project's items (the demo's sample; see
    ``learning.services.embedding.vectors_preload``). Returns the number stored."""
    from learning.services.embedding import vectors_preload

    return vectors_preload(project_id=project_id, path=path)


def active_model_language_figures(*, project_id: int) -> tuple[int | None, dict[str, Any]]:
    """The newest active model version's number and its per-language cross-validated figures
    (``metrics["cv"]["by_language"]``, learning/services/evaluation.py); (None, {}) before the first model.
    A read for the stats pages, which may not import learning.models themselves."""
    row = (ModelVersion.objects.filter(project_id=project_id, status=ModelVersion.Status.ACTIVE)
           .order_by("-version").values_list("version", "metrics").first())
    if row is None:
        return None, {}
    version, metrics = row
    cv = (metrics or {}).get("cv") or {}
    return int(version), dict(cv.get("by_language") or {})
