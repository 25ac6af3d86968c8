"""``/api/projects/{slug}/taxonomy/skos``: a taxonomy version as SKOS (GET) and a SKOS scheme into the draft (POST).

The conversion lives in labeling/services/taxonomy_skos.py; the import then goes through ``taxonomy_import`` like
any JSON document, so the draft, preview and publish steps (and their checks) are the same.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.serializers_taxonomy import DraftSerializer
from labeling.api.views_export import FormatIsAParameter
from labeling.api.views_taxonomy import TAG, _int_param, _project
from labeling.models import Capability
from labeling.selectors import taxonomy as selectors
from labeling.services import taxonomy as services
from labeling.services.errors import ValidationFailed
from labeling.services.taxonomy_skos import (
    CONTENT_TYPES,
    EXTENSIONS,
    MAX_SKOS_BYTES,
    skos_export,
    skos_format,
    skos_parse,
)


class RawBody:
    def __init__(self, data: bytes, media_type: str) -> None:
        self.data = data
        self.media_type = media_type


class SkosParser(BaseParser):
    """Turtle and JSON-LD bodies, read whole up to the size cap (a taxonomy is small)."""

    media_type = "text/turtle"

    def parse(self, stream: Any, media_type: str | None = None,  # type: ignore[override]
              parser_context: Any = None) -> RawBody:
        data = stream.read(MAX_SKOS_BYTES + 1) if stream is not None else b""
        return RawBody(data, media_type or "")


class JsonLdParser(SkosParser):
    media_type = "application/ld+json"


class TaxonomySkosView(APIView):
    parser_classes = [SkosParser, JsonLdParser, MultiPartParser]
    content_negotiation_class = FormatIsAParameter  # ?format= names the RDF syntax, not a DRF renderer

    @extend_schema(
        tags=TAG, summary="Download a taxonomy version as a SKOS concept scheme (Turtle or JSON-LD)",
        description="Labels are skos:Concepts (notation = key, prefLabel = name, definition = guideline, "
                    "broader/narrower = the tree, example = positive examples); the version is the skos:ConceptScheme "
                    "(owl:versionInfo, skos:changeNote = its changelog). Any member may read it.",
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["turtle", "json-ld"], required=False),
                    OpenApiParameter("version", OpenApiTypes.INT, required=False)],
        responses={(200, "text/turtle"): OpenApiTypes.STR, (200, "application/ld+json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, slug: str) -> HttpResponse:
        project = _project(request, slug, Capability.VIEW)
        fmt = request.query_params.get("format", "turtle")
        if fmt not in CONTENT_TYPES:
            raise ValidationFailed("format: turtle or json-ld", field="format")
        if request.query_params.get("version"):
            version = selectors.version_get(project, _int_param(request, "version"))
        else:
            version = selectors.current_version(project)
        iri = request.build_absolute_uri(f"/api/projects/{project.slug}/taxonomy/versions/{version.number}/")
        body = skos_export(selectors.version_document(version), scheme_iri=iri.rstrip("/"), version=version.number,
                           changelog=version.changelog,
                           issued=version.published_at.isoformat() if version.published_at else None, fmt=fmt)
        response = HttpResponse(body, content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = (f'attachment; filename="{project.slug}-taxonomy-v{version.number}.'
                                           f'{EXTENSIONS[fmt]}"')
        return response

    @extend_schema(
        tags=TAG, summary="Read a SKOS concept scheme (Turtle or JSON-LD) into the taxonomy draft",
        description="Send the scheme as a `text/turtle` or `application/ld+json` body, or as a multipart `file` "
                    "(.ttl, .jsonld). Keys come from skos:notation (else the concept IRI's last segment); the "
                    "document is then validated and saved into the draft exactly as `POST .../taxonomy/import` does.",
        request={"text/turtle": OpenApiTypes.STR, "application/ld+json": OpenApiTypes.OBJECT,
                 "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string",
                                                                                   "format": "binary"}}}},
        responses={200: DraftSerializer, 400: OpenApiResponse(description="Not SKOS, or not a valid taxonomy.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        body = request.data
        if isinstance(body, RawBody):
            data, fmt = body.data, skos_format(content_type=body.media_type)
        else:
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationFailed("file: send a Turtle or JSON-LD body, or a multipart file", field="file")
            data, fmt = upload.read(MAX_SKOS_BYTES + 1), skos_format(filename=upload.name or "")
        if fmt is None:
            raise ValidationFailed("file: name it .ttl or .jsonld (Turtle or JSON-LD)", field="file")
        services.taxonomy_import(actor=request.user, project=project, document=skos_parse(data, fmt=fmt))
        return Response(selectors.draft_state(_project(request, slug, Capability.EDIT_TAXONOMY)))
