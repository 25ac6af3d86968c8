"""Export endpoints: the streamed training set and named snapshots.

- ``GET  /api/projects/{slug}/export?format=jsonl|csv|parquet&...`` streams the rows of the ``export``
  command (StreamingHttpResponse; Parquet goes out row group by row group).
- ``GET  /api/projects/{slug}/exports/`` lists snapshots, newest first, with their status; ``POST``
  requests one from ``{name, format, ...parameters}``: 202 with the snapshot (``status`` pending) and
  ``status_url`` (also the Location header) once it is queued; 400 for a bad parameter and 409 if
  the name is taken, with nothing recorded.
- ``GET  /api/projects/{slug}/exports/{name}/`` the snapshot: status (pending, running, done, failed
  with ``error``), and once done its checksum and dataset card (JSON and Markdown).
- ``POST /api/projects/{slug}/exports/{name}/retry`` queues a failed snapshot again (202; 409 otherwise).
- ``GET  /api/projects/{slug}/exports/{name}/download`` the file, with ``X-Checksum-SHA256`` (409 until done).

All need Capability.EXPORT: reviewers get 403 and outsiders 404, before anything is read or written.
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.api.pagination import NewestFirstQuerySerializer, newest_first_parameters, page
from labeling.models import Capability, ExportSnapshot, Project
from labeling.services.audit import audit_record
from labeling.services.errors import NotFound
from labeling.services.exports import (
    AGGREGATIONS,
    CONTENT_TYPES,
    CSV_CELLS,
    EXTENSIONS,
    FORMATS,
    GOLD_MODES,
    PROPAGATED_MODES,
    export_card_markdown,
    export_params_parse,
    export_prepare,
    export_snapshot_path,
    export_snapshot_request,
    export_snapshot_retry,
    export_stream,
)


class FormatIsAParameter(DefaultContentNegotiation):
    """``?format=`` names the export format here, not a DRF renderer: always answer errors as JSON."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        renderer = renderers[0]
        return renderer, renderer.media_type


def _query_params(request: Request) -> dict[str, Any]:
    return {key: request.query_params.getlist(key) for key in request.query_params}


_EXPORT_PARAMETERS = [
    OpenApiParameter("format", str, enum=list(FORMATS), description="Default jsonl."),
    OpenApiParameter("aggregation", str, enum=list(AGGREGATIONS), description="Default majority."),
    OpenApiParameter("split", str, description="train,validation,test fractions, e.g. 0.8,0.1,0.1; assigns "
                                               "splits to items that have none (never changes one)."),
    OpenApiParameter("seed", int, description="Seed of the split order (default 0)."),
    OpenApiParameter("raw", bool, description=(
        "Include each annotator's raw answers in a `raw` column: reviewer, labels, mapped_labels, taxonomy_version, "
        "model_version, created_at, selection_reason, lead_time_ms and the reviewer's comment (plain text).")),
    OpenApiParameter("gold", str, enum=list(GOLD_MODES), description="Flag (default) or exclude gold items."),
    OpenApiParameter("taxonomy_version", int, description="Only answers given under this version."),
    OpenApiParameter("since", str, description="Answers created at/after (ISO date or datetime)."),
    OpenApiParameter("until", str, description="Answers created before (a date includes the day)."),
    OpenApiParameter("reviewer", str, many=True, description="Only these reviewers' answers."),
    OpenApiParameter("min_agreement", float),
    OpenApiParameter("min_annotators", int),
    OpenApiParameter("label", str, many=True, description="Only items whose labels include one of these."),
    OpenApiParameter("language", str, many=True, description=(
        "Only items in these languages (ISO 639 codes as GET .../languages/ shows them; `und`: undetermined); "
        "recorded in the dataset card's params.")),
    OpenApiParameter("csv_cells", str, enum=list(CSV_CELLS), description=(
        "CSV only. `escaped` (default): cells that begin with =, +, -, @, tab, carriage return or ' get a leading "
        "apostrophe, so a spreadsheet never runs them as formulas; remove one leading ' to read the true value. "
        "`raw`: every cell verbatim, for programs (pandas, the csv module), never for a spreadsheet.")),
    OpenApiParameter("propagated", str, enum=list(PROPAGATED_MODES), description=(
        "`include` (default): answers propagated from a near-duplicate cluster's representative count, read only "
        "while their item has no human answer; a row resting on them alone has label_source `propagated`. "
        "`exclude`: human answers (and adjudications) only.")),
]


def _binary_200(description: str) -> dict[Any, OpenApiResponse]:
    """One documented 200 per export media type (JSON Lines, CSV, Parquet), so clients and the schema agree."""
    return {(200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=description)
            for media_type in sorted(set(CONTENT_TYPES.values()))}


class ExportView(APIView):
    content_negotiation_class = FormatIsAParameter

    @extend_schema(parameters=_EXPORT_PARAMETERS,
                   responses={**_binary_200("The rows, streamed."),
                              400: OpenApiResponse(description="Bad parameter (named)."),
                              403: OpenApiResponse(description="Role may not export.")})
    def get(self, request: Request, slug: str) -> StreamingHttpResponse:
        project = Project.objects.get_for(request.user, slug, Capability.EXPORT)
        params = export_params_parse(_query_params(request))
        prepared = export_prepare(project=project, params=params, actor=request.user)
        response = StreamingHttpResponse(export_stream(prepared), content_type=CONTENT_TYPES[params.format])
        response["Content-Disposition"] = f'attachment; filename="{project.slug}.{EXTENSIONS[params.format]}"'
        # Let a reverse proxy pass chunks on as they come instead of buffering the whole download.
        response["X-Accel-Buffering"] = "no"
        response["Cache-Control"] = "no-store"
        return response


class SnapshotSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username",
                                                                                 read_only=True)
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportSnapshot
        fields = ["id", "name", "format", "params", "status", "error", "attempts", "status_url", "sha256",
                  "size_bytes", "row_count", "created_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_status_url(self, snapshot: ExportSnapshot) -> str:
        return reverse("api-export-snapshot", kwargs={"slug": snapshot.project.slug, "name": snapshot.name})


class SnapshotDetailSerializer(SnapshotSerializer):
    card_markdown = serializers.SerializerMethodField()

    class Meta(SnapshotSerializer.Meta):
        fields = [*SnapshotSerializer.Meta.fields, "card", "card_markdown"]
        read_only_fields = fields

    def get_card_markdown(self, snapshot: ExportSnapshot) -> str:
        return export_card_markdown(snapshot.card)


class SnapshotCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.SlugField(max_length=100)
    format = serializers.ChoiceField(choices=list(FORMATS), default="jsonl")
    # Any other export parameter (split, seed, aggregation, raw, gold, filters) goes alongside.


class SnapshotListView(APIView):
    """Snapshots, newest first, ``limit`` per page (labeling/api/pagination.py)."""

    @extend_schema(parameters=newest_first_parameters("id"), responses={200: SnapshotSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.EXPORT)
        query = validated(NewestFirstQuerySerializer, request.query_params)
        snapshots = ExportSnapshot.objects.filter(project=project)
        if "before" in query:
            snapshots = snapshots.filter(id__lt=query["before"])
        rows = list(snapshots.select_related("created_by", "project").order_by("-id")[:query["limit"] + 1])
        return page(rows, query["limit"], request, body=lambda shown: SnapshotSerializer(shown, many=True).data,
                    cursor=lambda last: {"before": last.pk})

    @extend_schema(request=SnapshotCreateSerializer,
                   responses={202: SnapshotDetailSerializer,
                              400: OpenApiResponse(description="Bad parameter (named)."),
                              409: OpenApiResponse(description="Name taken.")})
    def post(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.EXPORT)
        body = request.data if isinstance(request.data, dict) else {}
        head = SnapshotCreateSerializer(data=body)
        head.is_valid(raise_exception=True)
        params = export_params_parse(body, ignore=("name",))
        snapshot = export_snapshot_request(project=project, actor=request.user, name=head.validated_data["name"],
                                           params=params)
        data = SnapshotDetailSerializer(snapshot).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status_url"]})


def _snapshot(request: Request, slug: str, name: str) -> tuple[Project, ExportSnapshot]:
    project = Project.objects.get_for(request.user, slug, Capability.EXPORT)
    snapshot = (ExportSnapshot.objects.filter(project=project, name=name).select_related("created_by", "project")
                .first())
    if snapshot is None:
        raise NotFound(f"no snapshot named {name!r}")
    return project, snapshot


class SnapshotDetailView(APIView):
    @extend_schema(responses={200: SnapshotDetailSerializer})
    def get(self, request: Request, slug: str, name: str) -> Response:
        _project, snapshot = _snapshot(request, slug, name)
        return Response(SnapshotDetailSerializer(snapshot).data)


class SnapshotRetryView(APIView):
    @extend_schema(request=None, responses={202: SnapshotDetailSerializer,
                                            409: OpenApiResponse(description="Not failed: nothing to retry.")})
    def post(self, request: Request, slug: str, name: str) -> Response:
        project, _snapshot_row = _snapshot(request, slug, name)
        snapshot = export_snapshot_retry(project=project, actor=request.user, name=name)
        data = SnapshotDetailSerializer(snapshot).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status_url"]})


class SnapshotDownloadView(APIView):
    content_negotiation_class = FormatIsAParameter

    @extend_schema(responses={**_binary_200("The file; X-Checksum-SHA256 carries its checksum."),
                              409: OpenApiResponse(description="Not done yet.")})
    def get(self, request: Request, slug: str, name: str) -> FileResponse:
        project, snapshot = _snapshot(request, slug, name)
        path = export_snapshot_path(snapshot)
        audit_record(actor=request.user, action="export.snapshot_download", obj=snapshot, project=project,
                     data={"name": snapshot.name, "sha256": snapshot.sha256})
        response = FileResponse(path.open("rb"), as_attachment=True,
                                filename=f"{project.slug}-{snapshot.name}.{EXTENSIONS.get(snapshot.format, 'bin')}",
                                content_type=CONTENT_TYPES.get(snapshot.format, "application/octet-stream"))
        response["X-Checksum-SHA256"] = snapshot.sha256
        response["ETag"] = f'"{snapshot.sha256}"'
        response["Cache-Control"] = "no-store"
        return response
