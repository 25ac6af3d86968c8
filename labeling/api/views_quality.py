"""Quality over HTTP: stats (progress, agreement, prevalence, reviewers, queue health, timeline) and adjudication.

Every view looks its project up through ``Project.objects.get_for`` (404 for non-members, 403 for a role
without the capability): stats need VIEW_STATS (policy leads, ML engineers, admins), adjudication needs
ADJUDICATE (policy leads, admins). Reviewers see neither: the figures name reviewers and gold answers.
The dashboard (frontend/static/frontend/dashboard.js) draws its charts from these same endpoints.

The figures are served through ``labeling.selectors.quality.cached_figures``: recomputed only when a write changes
them (a fingerprint of answers, adjudications, leases and item counts), so a 1M-item project's dashboard
does not redo seconds of work per request (labeling/selectors/quality.py, "The stats cache").
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated as _validated
from labeling.api.serializers_quality import (
    AdjudicationDecideSerializer,
    AdjudicationListQuerySerializer,
    AdjudicationOpenSerializer,
    AdjudicationPageSerializer,
    AdjudicationSerializer,
    AgreementSerializer,
    LabelErrorListQuerySerializer,
    LabelErrorPageSerializer,
    PrevalenceSerializer,
    QueueHealthSerializer,
    ReviewerStatsSerializer,
    StatsSummarySerializer,
    TimelineSerializer,
)
from labeling.models import Adjudication, Capability, Project
from labeling.selectors import quality
from labeling.selectors.adjudication import adjudication_list, adjudication_one
from labeling.selectors.label_errors import label_errors_page
from labeling.services.adjudication import adjudication_decide, adjudication_open
from labeling.services.errors import NotFound


class _ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    detail = serializers.CharField()
    code = serializers.CharField(required=False)


ERRORS = {
    400: OpenApiResponse(_ErrorSerializer, description="Invalid input; `detail` names what is wrong."),
    403: OpenApiResponse(_ErrorSerializer, description="Your role may not do this in the project."),
    404: OpenApiResponse(_ErrorSerializer, description="No such project (among yours) or adjudication."),
    409: OpenApiResponse(_ErrorSerializer, description="Already decided; send revise=true to change it."),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}




def _project(request: Request, slug: str, capability: str) -> Project:
    project: Project = Project.objects.get_for(request.user, slug, capability)
    return project


class StatsSummaryView(APIView):
    """CONTRACT.md: progress, agreement and prevalence figures (plus adjudication counts and gold alerts)."""

    @extend_schema(operation_id="project_stats", responses={200: StatsSummarySerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.cached_figures(_project(request, slug, Capability.VIEW_STATS), "summary"))


class AgreementView(APIView):
    """Krippendorff's alpha (project, per label), Cohen's kappa per reviewer pair, label confusion."""

    @extend_schema(operation_id="project_stats_agreement", responses={200: AgreementSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.cached_figures(_project(request, slug, Capability.VIEW_STATS), "agreement"))


class ReviewerStatsView(APIView):
    """Per reviewer: throughput, time, skips, gold accuracy, consensus, suggestion following; gold alerts."""

    @extend_schema(operation_id="project_stats_reviewers",
                   responses={200: ReviewerStatsSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.cached_figures(_project(request, slug, Capability.VIEW_STATS), "reviewers"))


class PrevalenceView(APIView):
    """Per label: prevalence in the pool with a 95% interval, from the queue's exploration sample."""

    @extend_schema(operation_id="project_stats_prevalence", responses={200: PrevalenceSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.cached_figures(_project(request, slug, Capability.VIEW_STATS), "prevalence"))


class QueueHealthView(APIView):
    """Queue size, leases out and expired, ranking consumption and staleness, recent throughput."""

    @extend_schema(operation_id="project_stats_queue_health",
                   responses={200: QueueHealthSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.queue_health(_project(request, slug, Capability.VIEW_STATS)))


class TimelineView(APIView):
    """Agreement over time and the label distribution, per day (or week)."""

    @extend_schema(operation_id="project_stats_timeline", responses={200: TimelineSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(quality.cached_figures(_project(request, slug, Capability.VIEW_STATS), "timeline"))


class LabelErrorListView(APIView):
    """Suspected label errors: counts per state and the candidates with their route and outcome (VIEW_STATS)."""

    @extend_schema(
        operation_id="project_label_errors",
        parameters=[OpenApiParameter("state", str, enum=["new", "recheck", "adjudication", "confirmed", "cleared",
                                                         "skipped"]),
                    OpenApiParameter("limit", int, description="1-200, default 50"),
                    OpenApiParameter("offset", int)],
        responses={200: LabelErrorPageSerializer, **_errors(400, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.VIEW_STATS)
        query = _validated(LabelErrorListQuerySerializer, request.query_params)
        return Response(label_errors_page(project, state=query.get("state"), limit=query["limit"],
                                          offset=query["offset"]))


def _one(project: Project, adjudication_id: int) -> dict[str, Any]:
    found = adjudication_one(project, adjudication_id)
    if found is None:
        raise NotFound(f"no adjudication {adjudication_id} in project {project.slug!r}")
    return found


class AdjudicationListView(APIView):
    """The adjudication queue (GET, pending first) and sending an item to it by hand (POST)."""

    @extend_schema(
        operation_id="project_adjudications_list",
        parameters=[OpenApiParameter("state", str, enum=list(Adjudication.State.values)),
                    OpenApiParameter("limit", int, description="1-200, default 50"),
                    OpenApiParameter("offset", int)],
        responses={200: AdjudicationPageSerializer, **_errors(400, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.ADJUDICATE)
        query = _validated(AdjudicationListQuerySerializer, request.query_params)
        return Response(adjudication_list(project, state=query.get("state"), limit=query["limit"],
                                                  offset=query["offset"]))

    @extend_schema(operation_id="project_adjudications_open", request=AdjudicationOpenSerializer,
                   responses={201: AdjudicationSerializer, 200: AdjudicationSerializer, **_errors(400, 403, 404)})
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.ADJUDICATE)
        data = _validated(AdjudicationOpenSerializer, request.data)
        adjudication, created = adjudication_open(actor=request.user, project=project,  # type: ignore[arg-type]
                                                  external_id=data["external_id"], note=data["note"])
        return Response(_one(project, adjudication.pk),
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class AdjudicationDetailView(APIView):
    @extend_schema(operation_id="project_adjudication", responses={200: AdjudicationSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str, adjudication_id: int) -> Response:
        project = _project(request, slug, Capability.ADJUDICATE)
        return Response(_one(project, adjudication_id))


class AdjudicationDecideView(APIView):
    """The lead's final answer: it overrides any aggregate in exports and training. Audited."""

    @extend_schema(operation_id="project_adjudication_decide", request=AdjudicationDecideSerializer,
                   responses={200: AdjudicationSerializer, **_errors(400, 403, 404, 409)})
    def post(self, request: Request, slug: str, adjudication_id: int) -> Response:
        project = _project(request, slug, Capability.ADJUDICATE)
        data = _validated(AdjudicationDecideSerializer, request.data)
        adjudication_decide(actor=request.user, project=project, adjudication_id=adjudication_id,  # type: ignore[arg-type]
                            labels=data["labels"], note=data["note"], revise=data["revise"])
        return Response(_one(project, adjudication_id))
