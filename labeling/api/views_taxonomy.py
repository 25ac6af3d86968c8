"""Taxonomy endpoints: read versions, history and diffs (VIEW); edit, preview, publish, import (EDIT_TAXONOMY).

Every lookup goes through ``Project.objects.get_for`` (404 for outsiders, 403 for a role without the
capability) before anything is read or written.
"""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.api.pagination import NewestFirstQuerySerializer, newest_first_parameters, page
from labeling.api.serializers_taxonomy import (
    DiffSerializer,
    DraftSerializer,
    DraftWriteSerializer,
    PreviewSerializer,
    PublishSerializer,
    TaxonomyDocumentSerializer,
    TaxonomyVersionSerializer,
    VersionListItemSerializer,
)
from labeling.models import Capability, Project
from labeling.selectors import taxonomy as selectors
from labeling.services import taxonomy as services
from labeling.services.errors import ValidationFailed

MAX_IMPORT_BYTES = 5 * 1024 * 1024
# Room for the multipart envelope around a file of MAX_IMPORT_BYTES (boundaries and part headers).
MULTIPART_OVERHEAD = 64 * 1024
TAG = ["taxonomy"]


def _project(request: Request, slug: str, capability: str) -> Any:
    return Project.objects.select_related("current_taxonomy_version").get_for(request.user, slug, capability)


def _int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValidationFailed(f"{name}: must be a version number", path=name) from None


class TaxonomyCurrentView(APIView):
    @extend_schema(tags=TAG, summary="The current published taxonomy as a tree",
                   responses={200: TaxonomyVersionSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.VIEW)
        return Response(selectors.version_tree(selectors.current_version(project)))


class TaxonomyVersionListView(APIView):
    """Published versions, newest first, ``limit`` per page (labeling/api/pagination.py)."""

    @extend_schema(tags=TAG, summary="Published versions, newest first",
                   parameters=newest_first_parameters("version number"),
                   responses={200: VersionListItemSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.VIEW)
        query = validated(NewestFirstQuerySerializer, request.query_params)
        rows = selectors.version_history(project, before=query.get("before"), limit=query["limit"] + 1)
        return page(rows, query["limit"], request, body=list, cursor=lambda last: {"before": last["number"]})


class TaxonomyVersionDetailView(APIView):
    @extend_schema(tags=TAG, summary="One published version as a tree", responses={200: TaxonomyVersionSerializer})
    def get(self, request: Request, slug: str, number: int) -> Response:
        project = _project(request, slug, Capability.VIEW)
        return Response(selectors.version_tree(selectors.version_get(project, number)))


class TaxonomyDiffView(APIView):
    @extend_schema(
        tags=TAG, summary="What changed between two published versions",
        parameters=[OpenApiParameter("from", OpenApiTypes.INT, required=True),
                    OpenApiParameter("to", OpenApiTypes.INT, required=True)],
        responses={200: DiffSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.VIEW)
        return Response(selectors.version_diff(project, _int_param(request, "from"), _int_param(request, "to")))


class TaxonomyExportView(APIView):
    @extend_schema(
        tags=TAG, summary="Download a version as the contract's taxonomy JSON (default: the current one)",
        parameters=[OpenApiParameter("version", OpenApiTypes.INT, required=False)],
        responses={200: TaxonomyDocumentSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.VIEW)
        if request.query_params.get("version"):
            version = selectors.version_get(project, _int_param(request, "version"))
        else:
            version = selectors.current_version(project)
        response = Response(selectors.version_document(version))
        response["Content-Disposition"] = f'attachment; filename="{project.slug}-taxonomy-v{version.number}.json"'
        return response


class TaxonomyImportView(APIView):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        tags=TAG, summary="Validate a taxonomy JSON document (nested or flat form) and write it into the draft",
        request={"application/json": TaxonomyDocumentSerializer,
                 "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string",
                                                                                   "format": "binary"}}}},
        responses={200: DraftSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        # Refuse an oversized body before touching request.FILES: Django would spool all of it to disk first.
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_IMPORT_BYTES + MULTIPART_OVERHEAD:
            raise ValidationFailed(f"file: larger than {MAX_IMPORT_BYTES} bytes", path="file")
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size is not None and upload.size > MAX_IMPORT_BYTES:
                raise ValidationFailed(f"file: larger than {MAX_IMPORT_BYTES} bytes", path="file")
            try:
                document = json.loads(upload.read())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValidationFailed(f"file: not valid JSON ({exc})", path="file") from None
        else:
            document = request.data
        services.taxonomy_import(actor=request.user, project=project, document=document)
        return Response(selectors.draft_state(_project(request, slug, Capability.EDIT_TAXONOMY)))


class TaxonomyDraftView(APIView):
    @extend_schema(tags=TAG, summary="The draft (or, with exists=false, the current version to start from)",
                   responses={200: DraftSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        return Response(selectors.draft_state(project))

    @extend_schema(tags=TAG, summary="Replace the draft: the whole document plus declared migrations",
                   request=DraftWriteSerializer, responses={200: DraftSerializer})
    def put(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        body = request.data
        if not isinstance(body, dict):
            raise ValidationFailed("taxonomy: must be a JSON object", path="taxonomy")
        document = {k: v for k, v in body.items() if k != "migrations"}
        services.taxonomy_draft_save(actor=request.user, project=project, document=document,
                                     migrations=body.get("migrations"))
        return Response(selectors.draft_state(_project(request, slug, Capability.EDIT_TAXONOMY)))

    @extend_schema(tags=TAG, summary="Discard the draft", responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        services.taxonomy_draft_discard(actor=request.user, project=project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TaxonomyDraftPreviewView(APIView):
    @extend_schema(tags=TAG, summary="What publishing would do: annotations mapped and items re-queued",
                   request=None, responses={200: PreviewSerializer})
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        return Response(services.taxonomy_draft_preview(project=project))


class TaxonomyDraftPublishView(APIView):
    @extend_schema(tags=TAG, summary="Publish the draft as the next immutable version (all or nothing)",
                   request=PublishSerializer, responses={201: TaxonomyVersionSerializer})
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        changelog = request.data.get("changelog") if isinstance(request.data, dict) else None
        if changelog is not None and not isinstance(changelog, str):
            raise ValidationFailed("changelog: must be a string", path="changelog")
        version = services.taxonomy_draft_publish(actor=request.user, project=project, changelog=changelog or "")
        return Response(selectors.version_tree(version), status=status.HTTP_201_CREATED)
