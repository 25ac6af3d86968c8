"""``GET /api/projects/{slug}/models/``: a project's model versions, newest first, with queue staleness.

Each entry has CONTRACT.md's keys (``version``, ``created_at``, ``n_labels``, ``status``, ``metrics``) plus:
``active`` (the queue serves this model's ranking), ``labels_since`` (annotations submitted after the model's
newest one: how far the model lags behind the reviewers), ``age_seconds`` (since the model was created),
``timings`` (seconds per phase), ``activated_at``, ``strategy``, ``embedder``, ``exploration_rate``,
``cold_start``, ``n_pool``, ``n_ranked`` and ``error``.

The project is looked up through ``Project.objects.get_for`` (404 for non-members, 403 without VIEW).
``?limit=N`` (1-500, default 100) is the page size and ``?before=V`` the cursor of the next page (a ``Link``
header with ``rel="next"`` names it; the body is always the plain list). ``labels_since`` costs one index
range scan over the annotation ids newer than the oldest listed model, counted per model in the database.
``active_model_staleness`` gives the same two figures for the active model of several projects (the pages).

``GET /api/projects/{slug}/embedding/`` says where the project's learning stands (``embedding_status``): how many
of its items are embedded for its embedder, and whether the queue is served by a model yet. The home page and
the labelling page show the same figures while the worker embeds, instead of serving cold-start picks silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Annotation, Capability, Project
from learning.models import ModelVersion
from learning.services.embedding import embedding_progress

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


class ModelVersionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents the response shape (the view builds plain dicts)."""

    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    n_labels = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    metrics = serializers.DictField()
    active = serializers.BooleanField()
    labels_since = serializers.IntegerField()
    age_seconds = serializers.FloatField()
    timings = serializers.DictField()
    activated_at = serializers.DateTimeField(allow_null=True)
    strategy = serializers.CharField()
    embedder = serializers.CharField()
    exploration_rate = serializers.FloatField()
    cold_start = serializers.BooleanField()
    n_pool = serializers.IntegerField()
    n_ranked = serializers.IntegerField()
    error = serializers.CharField()


_FIELDS = ("version", "created_at", "n_labels", "status", "metrics", "timings", "activated_at", "strategy",
           "embedder", "exploration_rate", "cold_start", "n_pool", "n_ranked", "error", "max_annotation_id")


@dataclass(frozen=True)
class Staleness:
    """How far the model serving a project's queue lags behind its reviewers (issue: queue staleness)."""

    version: int
    labels_since: int  # annotations newer than the newest one the model learnt from
    age_seconds: float
    created_at: datetime


def active_model_staleness(project_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, Staleness]:
    """The active model of each project that has one, with the figures ``/models/`` shows for it.

    Two queries however many projects: the active models, then one grouped count whose WHERE is an OR of
    (project, id > newest seen) ranges over the ``annotation_project_id`` index, so only the labels newer than
    each model are read: the pages show this on every project card without counting a project's labels.
    """
    now = now or timezone.now()
    rows = list(ModelVersion.objects.filter(project_id__in=list(project_ids), status=ModelVersion.Status.ACTIVE)
                .values_list("project_id", "version", "created_at", "max_annotation_id"))
    newer = Q(pk__in=[])
    for project_id, _version, _created, newest_seen in rows:
        newer |= Q(project_id=project_id, id__gt=newest_seen or 0)
    since = dict(Annotation.objects.filter(newer).values("project_id").annotate(n=Count("id"))
                 .values_list("project_id", "n")) if rows else {}
    return {
        project_id: Staleness(version=version, labels_since=int(since.get(project_id, 0)), created_at=created_at,
                              age_seconds=round((now - created_at).total_seconds(), 3))
        for project_id, version, created_at, _seen in rows
    }


def _limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= MAX_LIMIT else None


def _positive(raw: str | None) -> int | bool | None:
    """None when absent, the integer when a positive one, False when malformed."""
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        return False
    return value if value >= 1 else False


def _bad(field: str, detail: str) -> Response:
    return Response({"detail": f"{field}: {detail}", "code": "invalid", "field": field}, status=400)


class ModelVersionListView(APIView):
    """Newest first, ``limit`` per page. Pages are keyset cursors on the version number: when older versions
    remain, the response carries ``Link: <...?limit=N&before=V>; rel="next"``. The body stays CONTRACT.md's
    plain JSON list, so a client that ignores the header sees exactly the first page it always saw."""

    @extend_schema(
        operation_id="project_models_list",
        parameters=[OpenApiParameter("limit", int, description=f"Newest N versions (1-{MAX_LIMIT}, default "
                                                               f"{DEFAULT_LIMIT})."),
                    OpenApiParameter("before", int, description="Only versions older than this one (the next "
                                                                "page; see the Link header).")],
        responses=ModelVersionSerializer(many=True),
    )
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        limit = _limit(request.query_params.get("limit"))
        if limit is None:
            return _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
        before = _positive(request.query_params.get("before"))
        if before is False:
            return _bad("before", "must be a positive integer (a model version)")
        versions = ModelVersion.objects.filter(project=project)
        if before is not None:
            versions = versions.filter(version__lt=before)
        rows = list(versions.order_by("-version").values(*_FIELDS)[:limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        seen = [r["max_annotation_id"] or 0 for r in rows]
        # One pass over the newer annotation ids: COUNT(*) FILTER (WHERE id > t) per distinct threshold.
        thresholds = sorted(set(seen))
        since: dict[int, int] = {}
        if thresholds:
            counts = Annotation.objects.filter(project=project, id__gt=thresholds[0]).aggregate(
                **{f"t{n}": Count("id", filter=Q(id__gt=t)) for n, t in enumerate(thresholds)})
            since = {t: int(counts[f"t{n}"]) for n, t in enumerate(thresholds)}
        now = timezone.now()
        body: list[dict[str, Any]] = []
        for row, newest_seen in zip(rows, seen, strict=True):
            row.pop("max_annotation_id")
            row["active"] = row["status"] == ModelVersion.Status.ACTIVE
            row["labels_since"] = since[newest_seen]
            row["age_seconds"] = round((now - row["created_at"]).total_seconds(), 3)
            body.append(row)
        response = Response(body)
        if more:
            url = request.build_absolute_uri(request.path) + f"?limit={limit}&before={rows[-1]['version']}"
            response["Link"] = f'<{url}>; rel="next"'
        return response


# --- Embedding progress and the first model -------------------------------------------------------------------


class EmbeddingState:
    EMPTY = "empty"  # no items yet
    EMBEDDING = "embedding"  # some items have no vector for the project's embedder yet
    TRAINING = "training"  # every item is embedded, no model serves the queue yet (the first retrain is due)
    READY = "ready"  # every item is embedded and a model serves the queue


@dataclass(frozen=True)
class EmbeddingStatus:
    """Where a project's learning stands, for a person: counts from ``embedding_progress``, and a sentence."""

    state: str
    embedder: str
    total: int
    embedded: int
    model_version: int | None

    @property
    def pending(self) -> int:
        return self.total - self.embedded

    @property
    def message(self) -> str:
        if self.state == EmbeddingState.EMPTY:
            return "No items yet: import some to start."
        if self.state == EmbeddingState.EMBEDDING and self.model_version is None:
            return (f"Embedding {self.embedded:,} of {self.total:,} items ({self.embedder}). Until the first model "
                    "is trained, the queue serves items in random order.")
        if self.state == EmbeddingState.EMBEDDING:
            return (f"Embedding new items: {self.embedded:,} of {self.total:,} embedded ({self.embedder}). They join "
                    "the ranking at the next retrain.")
        if self.state == EmbeddingState.TRAINING:
            return f"All {self.total:,} items are embedded; training the first model."
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "embedder": self.embedder, "total": self.total, "embedded": self.embedded,
                "pending": self.pending, "model_version": self.model_version, "message": self.message}


def embedding_status(projects: Iterable[tuple[int, str, datetime]], model_versions: Mapping[int, int],
                     totals: Mapping[int, int] | None = None) -> dict[int, EmbeddingStatus]:
    """Each project's status, from (project id, embedder setting, created_at) and the active model versions the
    caller has already read (a project missing from ``model_versions`` has no model), and the ledger's item
    counts where the caller has them. Queries: see ``learning.services.embedding.embedding_progress``."""
    statuses: dict[int, EmbeddingStatus] = {}
    for project_id, progress in embedding_progress(projects, totals).items():
        version = model_versions.get(project_id)
        if progress.total == 0:
            state = EmbeddingState.EMPTY
        elif progress.pending:
            state = EmbeddingState.EMBEDDING
        else:
            state = EmbeddingState.READY if version is not None else EmbeddingState.TRAINING
        statuses[project_id] = EmbeddingStatus(state=state, embedder=progress.embedder, total=progress.total,
                                               embedded=progress.embedded, model_version=version)
    return statuses


def project_embedding_status(project: Project) -> EmbeddingStatus:
    """One project's status (the labelling page and ``GET .../embedding/``): its active model, then the counts."""
    version = (ModelVersion.objects.filter(project=project, status=ModelVersion.Status.ACTIVE)
               .values_list("version", flat=True).first())
    return embedding_status([(project.pk, project.embedder, project.created_at)],
                            {project.pk: version} if version is not None else {})[project.pk]


class EmbeddingStatusSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents the response shape (the view builds a plain dict)."""

    state = serializers.ChoiceField(
        choices=[EmbeddingState.EMPTY, EmbeddingState.EMBEDDING, EmbeddingState.TRAINING, EmbeddingState.READY],
        help_text="empty: no items; embedding: some items have no vector yet; training: all embedded, no model "
                  "serves the queue yet; ready: all embedded and a model serves the queue.")
    embedder = serializers.CharField(help_text="The project's embedder setting (minilm, static, hashing).")
    total = serializers.IntegerField(help_text="Items in the project.")
    embedded = serializers.IntegerField(help_text="Items whose text has a vector for the project's embedder.")
    pending = serializers.IntegerField(help_text="total - embedded.")
    model_version = serializers.IntegerField(allow_null=True, help_text="The active model's version, if any.")
    message = serializers.CharField(help_text="The same status as a sentence (empty when ready).")


class EmbeddingStatusView(APIView):
    """How far the project's items are embedded, and whether a model serves its queue yet. The counts are
    exact when taken and cached for a few seconds (``learning.services.embedding.embedding_progress``)."""

    @extend_schema(operation_id="project_embedding_status", responses=EmbeddingStatusSerializer)
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(project_embedding_status(project).as_dict())
