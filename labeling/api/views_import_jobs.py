"""Import jobs: ``/api/projects/{slug}/imports/`` (list, upload), ``.../imports/{id}/`` and ``.../imports/{id}/errors``.

An import run by a worker, for large files and the import page (labeling/services/import_jobs.py): the upload is
stored and answered at once with the pending job (202); its status, counts and bytes read are read back here while
the worker imports it, and its per-line errors are a CSV download once it is done. IMPORT capability, like the
direct import (``POST .../items/import``, which stays the way to import in the request).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.views_items import ImportErrorSerializer
from labeling.models import Capability, ImportJob, Project
from labeling.services.errors import NotFound, ValidationFailed
from labeling.services.import_jobs import import_job_create, import_job_errors_csv

JOBS_LISTED = 50


class ImportJobSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    created_by: serializers.SlugRelatedField[ImportJob] = serializers.SlugRelatedField(
        slug_field="username", read_only=True)
    rows_read = serializers.IntegerField(read_only=True, help_text="created + updated + unchanged + error_count.")
    percent = serializers.IntegerField(read_only=True, help_text="Share of the file read (100 once done).")
    errors = serializers.ListField(child=ImportErrorSerializer(), read_only=True,  # type: ignore[assignment]
                                   help_text="The per-line errors, once done (the first 10,000).")

    class Meta:
        model = ImportJob
        fields = ["id", "filename", "gold", "status", "size_bytes", "bytes_read", "percent", "rows_read", "created",
                  "updated", "unchanged", "error_count", "errors", "failure", "created_by", "created_at",
                  "started_at", "finished_at"]
        read_only_fields = fields


def _job(request: Request, slug: str, job_id: int) -> ImportJob:
    project = Project.objects.get_for(request.user, slug, Capability.IMPORT)
    job = ImportJob.objects.filter(project=project, pk=job_id).select_related("created_by").first()
    if job is None:
        raise NotFound(f"no import job {job_id} in this project")
    return job


class ImportJobListView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(operation_id="import_jobs_list", tags=["items"], summary="The project's import jobs, newest first",
                   responses={200: ImportJobSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.IMPORT)
        jobs = ImportJob.objects.filter(project=project).select_related("created_by").order_by("-id")[:JOBS_LISTED]
        return Response(ImportJobSerializer(jobs, many=True).data)

    @extend_schema(
        operation_id="import_jobs_create", tags=["items"], summary="Upload a file for a worker to import",
        description="The same files as `POST .../items/import` (JSON Lines, CSV, Parquet; .gz), imported by a worker: "
                    "the answer is the pending job (202); follow its status at `.../imports/{id}/`. `gold=1` marks "
                    "gold items.",
        request={"multipart/form-data": inline_serializer(name="ImportJobUpload", fields={
            "file": serializers.FileField(), "gold": serializers.BooleanField(required=False)})},
        responses={202: ImportJobSerializer, 400: OpenApiResponse(description="No file."),
                   403: OpenApiResponse(description="Your role may not import."),
                   404: OpenApiResponse(description="No such project among yours.")})
    def post(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.IMPORT)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationFailed("file: required (a multipart file field)", field="file")
        gold = str(request.POST.get("gold", "")).lower() in ("1", "true", "on", "yes")
        job = import_job_create(actor=request.user, project=project, upload=upload, gold=gold)
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportJobDetailView(APIView):
    @extend_schema(operation_id="import_jobs_detail", tags=["items"], summary="One import job's status and counts",
                   responses={200: ImportJobSerializer, 404: OpenApiResponse(description="No such job or project.")})
    def get(self, request: Request, slug: str, job_id: int) -> Response:
        return Response(ImportJobSerializer(_job(request, slug, job_id)).data)


class ImportJobErrorsView(APIView):
    @extend_schema(operation_id="import_jobs_errors", tags=["items"],
                   summary="An import job's per-line errors as CSV (line,error)",
                   responses={(200, "text/csv"): OpenApiTypes.STR,
                              404: OpenApiResponse(description="No such job or project.")})
    def get(self, request: Request, slug: str, job_id: int) -> HttpResponse:
        job = _job(request, slug, job_id)
        response = HttpResponse(import_job_errors_csv(job), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-errors.csv"'
        return response
