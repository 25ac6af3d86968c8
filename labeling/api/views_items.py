"""Item endpoints: ``POST /api/projects/{slug}/items/import``.

The upload is never read into memory: a multipart ``file`` is spooled to a temporary file by
Django's upload handlers (above FILE_UPLOAD_MAX_MEMORY_SIZE), and an ``application/x-ndjson``
body is handed to the import service as the request stream itself.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Capability, Project
from labeling.services.errors import ValidationFailed
from labeling.services.images import items_import_zip, upload_is_zip
from labeling.services.items_import import items_import
from labeling.services.items_upload import items_upload_check


class RequestBody:
    """The unread request body, as the ndjson parser hands it over (``request.data``)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream


class NdjsonParser(BaseParser):
    """Accepts ``application/x-ndjson`` without reading it: the import service streams it."""

    media_type = "application/x-ndjson"

    def parse(self, stream: Any, media_type: str | None = None,  # type: ignore[override]
              parser_context: Any = None) -> RequestBody:
        return RequestBody(stream)


class ImportErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    line = serializers.IntegerField(help_text="1-based physical line (JSON Lines), the line a CSV record starts on, "
                                              "or the 1-based data row (Parquet).")
    error = serializers.CharField()


class ImportLanguagesSerializer(serializers.Serializer):  # type: ignore[type-arg]
    counts = serializers.DictField(child=serializers.IntegerField(), help_text=(
        "Valid rows per ISO 639 code (fastText's codes: en, ar, zh, hi, ...), most frequent first."))
    undetermined = serializers.IntegerField(help_text="Rows whose language the detector could not tell.")
    recommended_embedder = serializers.CharField(allow_null=True)


class ImportSummarySerializer(serializers.Serializer):  # type: ignore[type-arg]
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    # DRF's metaclass pops declared fields off the class, so this does not shadow Serializer.errors at run time.
    errors = serializers.ListField(child=ImportErrorSerializer())  # type: ignore[assignment]
    languages = ImportLanguagesSerializer(help_text=(
        "The languages detected in this file's valid rows (labeling/services/languages.py), and the embedder "
        "the mix calls for: `multilingual` when the project is on an English embedder and at least a fifth "
        "of the rows are in other languages, else null. Switch with PATCH /api/projects/{slug}/ `embedder`."))


class ImportFailedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A 400: an atomic import with bad rows (code "invalid_rows", with the summary), or a bad request; a 413:
    an upload over a size cap (code "too_large"; with the summary when gzip inflates past the decompressed cap)."""

    detail = serializers.CharField()
    code = serializers.CharField(help_text='"invalid_rows" (atomic import, nothing imported), "invalid", or '
                                           '"too_large" (413, nothing imported).')
    field = serializers.CharField(required=False, help_text="The bad request field (file, atomic, gold).")
    created = serializers.IntegerField(required=False)
    updated = serializers.IntegerField(required=False)
    unchanged = serializers.IntegerField(required=False)
    errors = serializers.ListField(child=ImportErrorSerializer(), required=False)  # type: ignore[assignment]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValidationFailed(f"{name}: must be 1 or 0 (true or false), got {raw!r}", field=name)


def _too_large() -> Response:
    limit = settings.SIFT_MAX_UPLOAD_BYTES
    return Response({"detail": f"the upload is larger than the limit of {limit:,} bytes", "code": "too_large"},
                    status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


class ItemImportView(APIView):
    parser_classes = [MultiPartParser, NdjsonParser]

    @extend_schema(
        operation_id="items_import",
        tags=["items"],
        summary="Import items (JSON Lines or CSV, optionally gzipped, or Parquet)",
        description=(
            "One item per row: `external_id` (required, unique within the project), `text` (required), `meta` "
            "(object; for CSV and Parquet, the other columns; in Parquet also a struct or JSON-string `meta` column). "
            "Send a multipart `file` (.jsonl, .csv, either may be .gz, or .parquet, read row group by row group; the "
            "format comes from the file name, else from the content; gzip from its magic bytes) or an "
            "`application/x-ndjson` body (JSON Lines, may be gzipped). Re-importing is idempotent on "
            "`external_id`: identical rows count as `unchanged`, a changed text or meta as `updated`. Within one "
            "file, rows apply in order (the last occurrence of an external_id wins). Every valid row is imported "
            "and every bad row is listed by line; with `atomic=1` nothing is imported if any row is bad, and the "
            "answer is 400. With `gold=1` each row's `label` (a key or a list of keys of the current taxonomy "
            "version) is the expected answer; otherwise `label` is ignored. Needs the `import` capability "
            "(policy lead, ML engineer, admin). **Images:** a multipart `.zip` holding one JSON Lines file and "
            "images; a row's `image` is the path of an image inside the zip (relative to the JSON Lines file; "
            "`text` may then be left out). Each image is decoded and re-encoded (WebP display size and thumbnail, "
            "EXIF stripped); SVG, non-raster files, decompression bombs, images over SIFT_MAX_IMAGE_BYTES and "
            "unsafe paths are refused by line (`image: ...`)."
        ),
        request={
            "multipart/form-data": inline_serializer(
                name="ItemImportUpload", fields={"file": serializers.FileField()},
            ),
            "application/x-ndjson": OpenApiTypes.BINARY,
        },
        parameters=[
            OpenApiParameter("atomic", OpenApiTypes.BOOL, description="Import nothing if any row is bad (400)."),
            OpenApiParameter("gold", OpenApiTypes.BOOL, description="Rows are gold items; `label` is the answer."),
        ],
        responses={
            200: ImportSummarySerializer,
            400: OpenApiResponse(ImportFailedSerializer, description=(
                "`atomic=1` and some rows are bad: nothing was imported, the body carries the summary "
                "(code `invalid_rows`). Or no file / a bad flag (code `invalid`, with `field`).")),
            403: OpenApiResponse(description="Your role may not import into this project."),
            404: OpenApiResponse(description="No such project among yours."),
            413: OpenApiResponse(ImportFailedSerializer, description=(
                "The upload is larger than SIFT_MAX_UPLOAD_BYTES, or it is gzip and inflates to more than "
                "SIFT_MAX_DECOMPRESSED_BYTES (then the body also carries a zero summary and the line where the cap "
                "was reached). Nothing was imported.")),
        },
        examples=[OpenApiExample("summary", response_only=True, status_codes=["200"], value={
            "created": 2, "updated": 0, "unchanged": 1,
            "errors": [{"line": 4, "error": "text: must not be empty"}],
            "languages": {"counts": {"ar": 2, "en": 1}, "undetermined": 0, "recommended_embedder": "multilingual"},
        })],
    )
    def post(self, request: Request, slug: str) -> Response:
        # Authorise before touching the body, so a denied caller never gets an upload spooled.
        project: Project = Project.objects.get_for(request.user, slug, Capability.IMPORT)
        atomic, gold = _flag(request, "atomic"), _flag(request, "gold")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.SIFT_MAX_UPLOAD_BYTES:
            return _too_large()
        data = request.data
        if isinstance(data, RequestBody):
            # A gzip over the decompressed cap is refused (413) here, before the import commits a row.
            source = items_upload_check(source=data.stream, rewindable=False)
            summary = items_import(actor=request.user, project=project, source=source,
                                   filename="request body", file_format="jsonl", gold=gold, atomic=atomic)
        else:
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationFailed("file: required (a multipart 'file' field, or an application/x-ndjson body)",
                                       field="file")
            if upload.size is not None and upload.size > settings.SIFT_MAX_UPLOAD_BYTES:
                return _too_large()
            if upload_is_zip(upload):  # images beside a JSON Lines file (labeling/services/images/zip_import.py)
                summary = items_import_zip(actor=request.user, project=project, source=upload, gold=gold,
                                           atomic=atomic)
            else:
                summary = items_import(actor=request.user, project=project,
                                       source=items_upload_check(source=upload, rewindable=True),
                                       filename=upload.name or "", gold=gold, atomic=atomic)
        body = summary.report()
        if atomic and not summary.ok:
            return Response({"detail": f"nothing was imported: {summary.error_count:,} row(s) are invalid",
                             "code": "invalid_rows", **body}, status=status.HTTP_400_BAD_REQUEST)
        return Response(body)
