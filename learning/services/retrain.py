"""Retrain and re-rank one project: database -> arrays -> learning.core -> batched ranking -> one-row switch.

THE RANKING INVARIANT. ``Project.active_ranking_version`` only ever points at a complete ranking:

1. the new ranking is written under a fresh ``ranking_version`` (= ``ModelVersion.version``, never reused),
   in batches of ``SIFT_RANKING_WRITE_BATCH`` rows, each its own short transaction. Readers never look at a
   version that is not active, so these rows are invisible while they are written;
2. before switching, the rows of the version are counted and must equal what the ranking holds;
3. the switch is one transaction: the model row goes training -> active (guarded on still being "training":
   a run that lost its claim finds its row marked failed and rolls back), the previous active model becomes
   superseded, and ``Project.active_ranking_version`` moves in one small UPDATE, forwards only;
4. superseded versions are pruned afterwards in bounded DELETEs (the previous version is kept, so a checkout
   that read the old pointer an instant before the switch still finds its rows).

A worker killed anywhere before (3) leaves a "training" row and an orphan, inactive version; the next run
marks the row failed ("abandoned") and its prune deletes the orphan rows. Nothing a reviewer reads changes.

IDEMPOTENCY. A run first computes a fingerprint of everything its result depends on: the project's label counter
(labeling/models/label_counter.py: every submit, undo and adjudication decision raises it in its own
transaction, so it never returns to an earlier value, unlike (newest annotation id, annotation count), which an
out-of-order commit plus an undo can restore over a different label set), that pair too (it still sees writes
that do not go through those services, such as a hard deletion), decided adjudications, the taxonomy version,
the embedder, the pool generation (bumped by every embedding pass) and the ranking config. When the newest
model attempt has that fingerprint and is active (or still training under a live claim), the run does nothing.
Models made before the counter existed have fingerprints without it: each project retrains once more.

RANKING DEPTH. The whole rankable pool is written, up to ``SIFT_RANKING_MAX_DEPTH`` (200k) positions. Reviewers
consume a few hundred positions between retrains, so a deeper ranking would only cost write time (and the
1M-item loop budget). Past the cap the queue serves its documented fallback, the items' uniform ``random_key``
order, which is itself a fair random sample; the positions past the cap are the least informative ones the
strategy saw. A cold-start ranking is shorter (``SIFT_COLD_START_DEPTH``, 200): its diverse picks come from
k-means with about one cluster per position, whose cost grows with the depth, and the first labels replace
it within minutes anyway; past it the same random fallback serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import (
    Adjudication,
    Annotation,
    Item,
    Label,
    LabelCounter,
    Project,
    RankingEntry,
    TaxonomyVersion,
)
from learning import jobs
from learning.core import (
    DEFAULT_C,
    DEFAULT_CLASS_WEIGHT,
    EmbeddingClassifier,
    PoolExhausted,
    Taxonomy,
    can_fit,
    get_strategy,
    rank_pool,
)
from learning.jobs import Claim
from learning.models import LearningJob, ModelVersion
from learning.services.embedding import embedder_for, vectors_for_texts
from learning.services.evaluation import model_metrics
from learning.services.guidelines import guideline_texts, guideline_vectors
from learning.services.label_errors import label_errors_at_retrain
from learning.services.pool import LabelSet, Pool, load_labels, load_pool

logger = logging.getLogger(__name__)

SCORE_CHUNK = 65_536
"""Rows per predict_proba call: float16 -> float32 conversion happens per chunk, never for the whole pool."""


class LostClaim(RuntimeError):
    """This run's claim was taken over (it stalled past the stale cutoff): it must not activate anything."""


@dataclass
class RetrainResult:
    """What a retrain run did: ``outcome`` is "activated", "noop" (fingerprint seen), "busy" (another run holds
    the claim), "empty" (no embedded item yet) or "failed"."""

    outcome: str
    version: int | None = None
    n_ranked: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class _Config:
    project_id: int
    strategy: str
    exploration_rate: float
    embedder_setting: str
    embedder_name: str
    taxonomy_version_id: int
    multi_label: bool
    leaf_keys: tuple[str, ...]
    seed_queries: tuple[str, ...]
    guidelines: tuple[str, ...]
    show_suggestions: bool
    max_depth: int
    cold_start_depth: int


def _taxonomy(version: TaxonomyVersion) -> Taxonomy:
    rows = list(Label.objects.filter(version=version).values_list("key", "parent__key"))
    keys = tuple(k for k, _ in rows)
    parent = {k: p for k, p in rows}
    return Taxonomy(keys=keys, parent=parent, multi_label=version.multi_label)


def _config(project: Project) -> _Config:
    if project.current_taxonomy_version_id is None:
        raise ValueError("the project has no published taxonomy yet")
    version = TaxonomyVersion.objects.get(pk=project.current_taxonomy_version_id)
    taxonomy = _taxonomy(version)
    seeds = tuple(str(s).strip() for s in (project.seed_queries or []) if str(s).strip())
    return _Config(
        project_id=project.pk,
        strategy=project.strategy,
        exploration_rate=float(project.exploration_rate),
        embedder_setting=project.embedder,
        embedder_name=embedder_for(project.embedder).name,
        taxonomy_version_id=version.pk,
        multi_label=version.multi_label,
        leaf_keys=taxonomy.leaf_keys,
        seed_queries=seeds,
        guidelines=guideline_texts(taxonomy_version_id=version.pk, leaf_keys=taxonomy.leaf_keys),
        show_suggestions=bool(project.show_suggestions),
        max_depth=settings.SIFT_RANKING_MAX_DEPTH,
        cold_start_depth=settings.SIFT_COLD_START_DEPTH,
    )


def pool_generation(project: Project) -> str:
    """Changes whenever the set of embedded items may have changed: the embed job's completed passes. The
    project's creation time disambiguates a reused primary key (SQLite test databases)."""
    generation = (
        LearningJob.objects.filter(project_id=project.pk, kind=LearningJob.Kind.EMBED)
        .values_list("generation", flat=True).first()
    ) or 0
    return f"{project.created_at.timestamp():.6f}:{generation}"


def fingerprint(config: _Config) -> tuple[str, int | None, int]:
    """(sha256 hex, newest annotation id, annotation count) of everything a retrain's result depends on."""
    # Read first: every change it counts had committed, so the labels this run loads later include them all.
    label_changes = LabelCounter.objects.value(project_id=config.project_id)
    annotations = Annotation.objects.filter(project_id=config.project_id).aggregate(newest=Max("id"))
    n_annotations = Annotation.objects.filter(project_id=config.project_id).count()
    decided = Adjudication.objects.filter(project_id=config.project_id, state=Adjudication.State.DECIDED)
    adjudication = decided.aggregate(newest=Max("decided_at"))["newest"]
    generation = (
        LearningJob.objects.filter(project_id=config.project_id, kind=LearningJob.Kind.EMBED)
        .values_list("generation", flat=True).first()
    ) or 0
    payload = {
        "label_changes": label_changes,
        "annotations": [annotations["newest"], n_annotations],
        "adjudications": [decided.count(), adjudication.isoformat() if adjudication else None],
        "taxonomy_version": config.taxonomy_version_id,
        "embedder": config.embedder_name,
        "pool_generation": generation,
        "config": {
            "strategy": config.strategy, "exploration_rate": config.exploration_rate,
            "seed_queries": list(config.seed_queries), "max_depth": config.max_depth,
            "cold_start_depth": config.cold_start_depth,
            "show_suggestions": config.show_suggestions,
            "classifier": {"C": DEFAULT_C, "class_weight": DEFAULT_CLASS_WEIGHT},
        },
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest, annotations["newest"], n_annotations


def _seed(project_id: int, version: int) -> int:
    # Deterministic per (project, version): rerunning a version's ranking reproduces it bit for bit.
    return int.from_bytes(hashlib.sha256(f"{project_id}:{version}".encode()).digest()[:4], "big")


def _strategy_name(setting: str) -> str:
    # An unknown name is recorded as given; rank_pool then fails the version with the registry's message.
    try:
        return get_strategy(setting).name
    except ValueError:
        return setting[:32]


def _next_version(project_id: int) -> int:
    newest = ModelVersion.objects.filter(project_id=project_id).aggregate(v=Max("version"))["v"]
    return int(newest or 0) + 1


def _abandon_stale_attempts(project_id: int) -> None:
    # We hold the claim, so any other "training" row belongs to a run that died or was taken over.
    ModelVersion.objects.filter(project_id=project_id, status=ModelVersion.Status.TRAINING).update(
        status=ModelVersion.Status.FAILED, error="abandoned: the worker stopped before activation",
        finished_at=timezone.now(),
    )


def model_version_train(*, project_id: int, owner: str = "") -> RetrainResult:
    """Retrain ``project_id`` and switch its queue to the new ranking (see the module docstring).

    ``owner`` is the Celery task id of the delivery: a redelivery of a message whose run died takes its claim over
    (learning/jobs.py). The claim is kept fresh by a background heartbeat for the whole run.
    """
    job = jobs.claim(kind=LearningJob.Kind.RETRAIN, project_id=project_id, owner=owner)
    if job is None:
        return RetrainResult(outcome="busy")
    error = ""
    try:
        with jobs.heartbeating(job):
            return _train(job)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        jobs.release(job, error=error, completed=not error)


def _check(job: Claim) -> None:
    if not jobs.heartbeat(job):
        raise LostClaim(f"retrain of project {job.project_id} lost its claim")


def _train(job: Claim) -> RetrainResult:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    project = Project.objects.filter(pk=job.project_id).first()
    if project is None:
        return RetrainResult(outcome="noop", error="project no longer exists")
    _abandon_stale_attempts(project.pk)
    config = _config(project)
    digest, newest_annotation, n_annotations = fingerprint(config)
    # The no-op rule: the active model already has this fingerprint, or the newest attempt with it found
    # nothing to rank (and nothing has changed since). A failed attempt of any other kind is retried.
    active = ModelVersion.objects.filter(project_id=project.pk, status=ModelVersion.Status.ACTIVE).first()
    if active is not None and active.fingerprint == digest:
        return RetrainResult(outcome="noop", version=active.version)
    newest = ModelVersion.objects.filter(project_id=project.pk).order_by("-version").first()
    # The newest attempt found no embedded item: it is the one row that says so (see the empty pool below).
    found_nothing = newest is not None and newest.status == ModelVersion.Status.FAILED and newest.n_pool == 0
    if found_nothing and newest is not None and newest.fingerprint == digest:
        return RetrainResult(outcome="noop", version=newest.version)

    tick = time.perf_counter()
    pool = load_pool(project_id=project.pk, embedder_name=config.embedder_name,
                     generation=pool_generation(project))
    timings["load_pool"] = time.perf_counter() - tick
    labels = load_labels(project_id=project.pk, taxonomy_version_id=config.taxonomy_version_id,
                         leaf_keys=config.leaf_keys, multi_label=config.multi_label,
                         up_to_annotation=newest_annotation if newest_annotation is not None else 0)
    timings["load"] = time.perf_counter() - tick
    _check(job)

    if len(pool) == 0 and found_nothing and newest is not None:
        # Still nothing embedded, but new labels changed the fingerprint: the newest row already says why, so
        # bring it up to date rather than add one failed row per label while embedding catches up.
        ModelVersion.objects.filter(pk=newest.pk).update(
            fingerprint=digest, max_annotation_id=newest_annotation, n_annotations=n_annotations,
            taxonomy_version_id=config.taxonomy_version_id, embedder=config.embedder_name,
            finished_at=timezone.now(), timings=_rounded(timings))
        return RetrainResult(outcome="empty", version=newest.version, timings=timings)

    with transaction.atomic():
        version = ModelVersion.objects.create(
            project=project, version=_next_version(project.pk), fingerprint=digest,
            max_annotation_id=newest_annotation, n_annotations=n_annotations,
            taxonomy_version_id=config.taxonomy_version_id, embedder=config.embedder_name,
            strategy=_strategy_name(config.strategy), exploration_rate=config.exploration_rate,
            n_pool=len(pool),
        )
    try:
        if len(pool) == 0:
            version.status = ModelVersion.Status.FAILED
            version.error = "no item has a vector yet (embedding pending): nothing to rank"
            version.finished_at = timezone.now()
            version.timings = _rounded(timings)
            version.save(update_fields=["status", "error", "finished_at", "timings"])
            return RetrainResult(outcome="empty", version=version.version, timings=timings)
        result = _fit_rank_write_activate(job, config, version, pool, labels, timings, t0)
    except Exception as exc:
        # Never activate a partial ranking: the row says why, the orphan rows go at the next prune.
        ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.TRAINING).update(
            status=ModelVersion.Status.FAILED, finished_at=timezone.now(), timings=_rounded(timings),
            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"[:8000],
        )
        raise
    return result


def item_languages(item_ids: np.ndarray) -> list[str | None]:
    """Each item's detected language (Item.language), in ``item_ids`` order: the groups of the per-language
    cross-validated figures (learning/services/evaluation.py)."""
    found = dict(Item.objects.filter(id__in=[int(i) for i in item_ids]).values_list("id", "language"))
    return [found.get(int(i)) for i in item_ids]


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}


def _fit_rank_write_activate(job: Claim, config: _Config, version: ModelVersion, pool: Pool, labels: LabelSet,
                             timings: dict[str, float], t0: float) -> RetrainResult:
    seed = _seed(config.project_id, version.version)
    classes = list(config.leaf_keys)

    # Fit on the labelled items that have a vector (an item labelled before its embedding landed waits).
    tick = time.perf_counter()
    positions, found = pool.positions(labels.item_ids)
    train_pos = positions[found]
    train_labels = [label for label, ok in zip(labels.labels, found.tolist(), strict=True) if ok]
    model: EmbeddingClassifier | None = None
    class_counts: np.ndarray | None = None
    if train_labels and can_fit(train_labels, multi_label=config.multi_label):
        model = EmbeddingClassifier(multi_label=config.multi_label, classes=classes, random_state=seed)
        model.fit(np.asarray(pool.vectors[train_pos], dtype=np.float32), train_labels)
        column = {c: i for i, c in enumerate(classes)}
        class_counts = np.zeros(len(classes), dtype=np.float64)
        for label in train_labels:
            for key in (label if config.multi_label else [label]):
                class_counts[column[key]] += 1
    timings["fit"] = time.perf_counter() - tick
    _check(job)

    # Score every pool position (the ranking needs probabilities for all of them), chunk by chunk.
    tick = time.perf_counter()
    proba: np.ndarray | None = None
    if model is not None:
        proba = np.empty((len(pool), len(classes)), dtype=np.float32)
        for start in range(0, len(pool), SCORE_CHUNK):
            chunk = np.asarray(pool.vectors[start:start + SCORE_CHUNK], dtype=np.float32)
            proba[start:start + SCORE_CHUNK] = model.predict_proba(chunk)
    timings["score"] = time.perf_counter() - tick

    tick = time.perf_counter()
    seed_vectors = None
    if model is None and config.seed_queries:
        seed_vectors = vectors_for_texts(config.seed_queries, embedder_for(config.embedder_setting))
    class_vectors = None
    if model is not None and class_counts is not None and (class_counts <= 0).any() and any(config.guidelines):
        # Unseen classes are sought near their guideline text (strategies with a seek_share; learning/core).
        class_vectors = guideline_vectors(config.guidelines, embedder_for(config.embedder_setting))
    n_rankable = int(pool.rankable.sum())
    depth = min(config.max_depth if model is not None else config.cold_start_depth, n_rankable)
    ranking = None
    if depth > 0:
        # rank_pool draws the exploration slots' phase from the seed, so reviewers who consume only a short
        # prefix of each ranking between retrains still meet exploration items at the configured rate.
        try:
            ranking = rank_pool(
                pool.vectors, labelled_indices=np.flatnonzero(~pool.rankable), strategy=config.strategy,
                proba=proba, class_counts=class_counts, multi_label=config.multi_label, seed_vectors=seed_vectors,
                exploration_rate=config.exploration_rate, depth=depth, random_state=seed,
                class_vectors=class_vectors,
            )
        except PoolExhausted:
            ranking = None
    timings["rank"] = time.perf_counter() - tick
    _check(job)

    # Write in batches, each its own short transaction; the version stays invisible until activation.
    tick = time.perf_counter()
    written = _write_ranking(job, config, version.version, pool, ranking, proba, classes, model is not None)
    timings["write"] = time.perf_counter() - tick

    tick = time.perf_counter()
    _activate(job, version, written, n_labels=len(train_labels), cold_start=model is None)
    timings["activate"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - t0
    ModelVersion.objects.filter(pk=version.pk).update(timings=_rounded(timings))

    # After the switch: figures for the model page, then the prune. Neither delays the queue.
    tick = time.perf_counter()
    metrics: dict[str, Any] = {"cold_start": model is None, "n_labels": len(train_labels),
                               "labels_skipped": dict(labels.skipped)}
    if train_labels:
        sampled = np.asarray([s for s, ok in zip(labels.sampled, found.tolist(), strict=True) if ok], dtype=bool)
        inclusion = np.asarray([p for p, ok in zip(labels.inclusion, found.tolist(), strict=True) if ok])
        try:
            metrics.update(model_metrics(
                pool.vectors[train_pos], train_labels, classes=classes, multi_label=config.multi_label,
                sampled=sampled, inclusion=inclusion, random_state=seed,
                groups=item_languages(pool.item_ids[train_pos]),
            ))
        except Exception as exc:  # figures are informative; a failure to compute them must not fail the model
            logger.exception("metrics for project %s v%s failed", config.project_id, version.version)
            metrics["error"] = f"{type(exc).__name__}: {exc}"
    if ranking is not None:
        reasons, counts = np.unique(ranking.reasons, return_counts=True)
        metrics["ranking_reasons"] = {str(r): int(c) for r, c in zip(reasons, counts, strict=True)}
    timings["evaluate"] = time.perf_counter() - tick

    tick = time.perf_counter()
    keep = [version.version]
    previous = (
        ModelVersion.objects.filter(project_id=config.project_id, status=ModelVersion.Status.SUPERSEDED,
                                    version__lt=version.version)
        .order_by("-version").values_list("version", flat=True).first()
    )
    if previous is not None:
        keep.append(previous)
    RankingEntry.objects.prune(project_id=config.project_id, keep_versions=keep)
    timings["prune"] = time.perf_counter() - tick

    tick = time.perf_counter()  # after the switch and the prune: reviewers never wait for it,
    # and the superseded rows are gone before this, the slowest figure, runs (three model fits)
    metrics["label_errors"] = label_errors_at_retrain(
        project_id=config.project_id, model_version=version.version, vectors=pool.vectors[train_pos],
        item_ids=[i for i, ok in zip(labels.item_ids, found.tolist(), strict=True) if ok], labels=train_labels,
        classes=classes, multi_label=config.multi_label, random_state=seed)
    timings["label_errors"] = time.perf_counter() - tick
    ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics, timings=_rounded(timings))
    logger.info("project %s model v%s active: %d ranked, %d labels, %.2fs to activate", config.project_id,
                version.version, written, len(train_labels), timings["total"])
    return RetrainResult(outcome="activated", version=version.version, n_ranked=written, timings=timings)


def _write_ranking(job: Claim, config: _Config, ranking_version: int, pool: Pool, ranking: Any,
                   proba: np.ndarray | None, classes: list[str], has_model: bool) -> int:
    if ranking is None or len(ranking) == 0:
        return 0
    batch = settings.SIFT_RANKING_WRITE_BATCH
    item_ids = pool.item_ids[ranking.indices]
    if has_model and proba is not None and config.show_suggestions:
        top = np.argmax(proba[ranking.indices], axis=1)
        confidence: np.ndarray | None = proba[ranking.indices, top].astype(np.float64)
        suggested: np.ndarray | None = np.asarray(classes)[top]
    else:
        confidence = suggested = None
    written = 0
    for start in range(0, len(ranking), batch):
        stop = min(start + batch, len(ranking))
        written += RankingEntry.objects.write_columns(
            project_id=config.project_id, ranking_version=ranking_version, start_rank=start,
            item_ids=item_ids[start:stop], scores=ranking.scores[start:stop], reasons=ranking.reasons[start:stop],
            inclusion_probabilities=ranking.inclusion_probabilities[start:stop],
            suggested_labels=suggested[start:stop] if suggested is not None else None,
            suggested_confidences=confidence[start:stop] if confidence is not None else None,
        )
        _check(job)
    return written


def _activate(job: Claim, version: ModelVersion, written: int, *, n_labels: int, cold_start: bool) -> None:
    stored = RankingEntry.objects.filter(project_id=version.project_id, ranking_version=version.version).count()
    if stored != written:
        raise RuntimeError(f"ranking v{version.version} holds {stored} rows, expected {written}; not activating")
    _check(job)
    now = timezone.now()
    with transaction.atomic():
        ModelVersion.objects.filter(project_id=version.project_id, status=ModelVersion.Status.ACTIVE).exclude(
            pk=version.pk).update(status=ModelVersion.Status.SUPERSEDED)
        # n_ranked is set in the same transaction as the pointer: "the active version holds n_ranked rows" is an
        # invariant any reader can check in one snapshot (tests/learning/test_crash_safety.py does).
        moved = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.TRAINING).update(
            status=ModelVersion.Status.ACTIVE, activated_at=now, finished_at=now, n_ranked=written,
            n_labels=n_labels, cold_start=cold_start)
        if not moved:
            raise LostClaim(f"model v{version.version} is no longer training (abandoned by a newer run)")
        if not RankingEntry.objects.activate(project_id=version.project_id, ranking_version=version.version,
                                             only_if_newer=True):
            raise LostClaim(f"a newer ranking than v{version.version} is already active")
