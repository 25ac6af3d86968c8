"""The learning side's tables: model versions, the embedding cache and the coalescing state of the jobs.

- ``ModelVersion``: one row per retrain that got as far as a loaded pool. Its ``version`` is also the
  ``RankingEntry.ranking_version`` it writes, so "which model made this queue order" is a join on two integers.
  ``fingerprint`` makes a retrain idempotent (learning/services/retrain.py).
- ``Embedding``: vectors cached by (embedder name, content hash), shared by every project, so the same text is
  never embedded twice. Vectors are float16 bytes (768 bytes for 384 dimensions): half the size of float32,
  and the cosine error (~1e-3) is far below anything a logistic regression or a ranking notices. A retrain
  at 1M items reads them with one binary COPY into one numpy buffer, never through the ORM
  (learning/services/pool.py).
- ``LearningJob``: one row per (project, kind) holding the dirty flag and the running claim that coalesce bursts
  of requests. The invariant is stated in learning/jobs.py.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="model_versions")
    # Per project, 1, 2, 3...; equals the RankingEntry.ranking_version this retrain writes.
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRAINING)
    # sha256 of (label counter, latest annotation, taxonomy version, embedder, pool generation, config): see
    # services/retrain.py.
    fingerprint = models.CharField(max_length=64)
    max_annotation_id = models.BigIntegerField(null=True, blank=True)
    n_annotations = models.PositiveIntegerField(default=0)
    taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", null=True, blank=True,
                                         on_delete=models.PROTECT, related_name="+")
    embedder = models.CharField(max_length=64)
    strategy = models.CharField(max_length=32)
    exploration_rate = models.FloatField(default=0.0)
    cold_start = models.BooleanField(default=False)
    # Labelled items the model was fitted on (after aggregating overlap), and the pool it ranked.
    n_labels = models.PositiveIntegerField(default=0)
    n_pool = models.PositiveIntegerField(default=0)
    n_ranked = models.PositiveIntegerField(default=0)
    # {"cv": {...}, "exploration": {...}, "class_counts": {...}}: see services/evaluation.py.
    metrics = models.JSONField(default=dict, blank=True)
    # Seconds per phase: {"load", "fit", "score", "rank", "write", "activate", "total"}.
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="unique_model_version"),
            # A fingerprint names one live model. A failed attempt may be retried under the same fingerprint,
            # and a superseded one may come back (an undo restores an earlier label set), so those are exempt.
            models.UniqueConstraint(
                fields=["project", "fingerprint"],
                condition=Q(status__in=["training", "active"]),
                name="unique_live_model_fingerprint",
            ),
            models.UniqueConstraint(
                fields=["project"], condition=Q(status="active"), name="one_active_model_per_project",
            ),
        ]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"project {self.project_id} model v{self.version} ({self.status})"


class Embedding(models.Model):
    """One vector per (embedder, content hash), shared across projects."""

    embedder = models.CharField(max_length=64)
    content_hash = models.CharField(max_length=64)
    # Little-endian float16, ``dim`` values: decoded by numpy.frombuffer(dtype="<f2").
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["embedder", "content_hash"], name="unique_embedding_key"),
        ]

    def __str__(self) -> str:
        return f"{self.embedder}:{self.content_hash[:12]}"


class LearningJob(models.Model):
    """The coalescing state of one kind of background job for one project (see learning/jobs.py)."""

    class Kind(models.TextChoices):
        EMBED = "embed", "Embed new items"
        RETRAIN = "retrain", "Retrain and re-rank"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Something happened that the last run has not seen. Set by every request, cleared when a run starts.
    dirty = models.BooleanField(default=False)
    # The dirty flag as the current (or last) run found it when it claimed: "this run was asked for".
    run_requested = models.BooleanField(default=False)
    requested_at = models.DateTimeField(null=True, blank=True)
    # A message for this job is believed to be in the broker: set by whoever wins the enqueue, cleared by the
    # run that consumes it. Stale after settings.SIFT_LEARNING_QUEUED_STALE_SECONDS (a lost message).
    queued_at = models.DateTimeField(null=True, blank=True)
    # The running claim: a random token and a heartbeat. Stale after settings.SIFT_LEARNING_STALE_SECONDS.
    running_token = models.CharField(max_length=32, null=True, blank=True)
    running_since = models.DateTimeField(null=True, blank=True)
    # The Celery task id of the delivery that holds the claim ("" for a call outside Celery). A redelivery of that
    # same message means the holder died (learning/jobs.py), so it may take the claim over at once.
    running_owner = models.CharField(max_length=255, blank=True, default="")
    # Completed passes of this job; the embed job's count is the "pool generation" in a retrain fingerprint.
    generation = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind"], name="unique_learning_job")]

    def __str__(self) -> str:
        return f"{self.kind} job of project {self.project_id}"


class WorkerHeartbeat(models.Model):
    """What the health endpoint knows of each worker (one row per worker name).

    ``beat_at``: the last time the worker ran the beat-scheduled sweep (learning/tasks.py). A recent one proves the
    whole loop end to end: beat scheduled the sweep, the broker carried it and a worker ran it.
    ``alive_at``, ``active_tasks``, ``busy_since``: written every few seconds by a thread in the worker's main
    process (learning/worker.py), whatever its tasks are doing. A worker busy with a long task cannot run the
    sweep, and these say it is alive and busy rather than gone.
    """

    worker = models.CharField(max_length=255, unique=True)
    beat_at = models.DateTimeField(null=True, blank=True)
    alive_at = models.DateTimeField(null=True, blank=True)
    active_tasks = models.PositiveIntegerField(default=0)
    # When the oldest of the running tasks started (as first seen by the liveness thread); None when idle.
    busy_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.worker} (sweep {self.beat_at}, alive {self.alive_at}, {self.active_tasks} running)"
