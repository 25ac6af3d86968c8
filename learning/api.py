"""``GET /api/projects/{slug}/models/``: a project's model versions, newest first, with queue staleness.

Each entry has CONTRACT.md's keys (``version``, ``created_at``, ``n_labels``, ``status``, ``metrics``) plus:
``active`` (the queue serves this model's ranking), ``labels_since`` (annotations submitted after the model's
newest one: how far the model lags behind the reviewers), ``age_seconds`` (since the model was created),
``timings`` (seconds per phase), ``activated_at``, ``strategy``, ``embedder``, ``exploration_rate``,
``cold_start``, ``n_pool``, ``n_ranked`` and ``error``.

The project is looked up through ``Project.objects.get_for`` (404 for non-members, 403 without VIEW).
``?limit=N`` (1-500, default 100) caps the list; ``labels_since`` costs one index range scan over the
annotation ids newer than the oldest listed model, counted per model in the database.
"""

from __future__ import annotations

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


def _limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= MAX_LIMIT else None


class ModelVersionListView(APIView):
    @extend_schema(
        operation_id="project_models_list",
        parameters=[OpenApiParameter("limit", int, description=f"Newest N versions (1-{MAX_LIMIT}).")],
        responses=ModelVersionSerializer(many=True),
    )
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        limit = _limit(request.query_params.get("limit"))
        if limit is None:
            return Response({"detail": f"limit: must be an integer from 1 to {MAX_LIMIT}", "code": "invalid",
                             "field": "limit"}, status=400)
        rows = list(ModelVersion.objects.filter(project=project).order_by("-version").values(*_FIELDS)[:limit])
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
        return Response(body)
