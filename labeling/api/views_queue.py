"""The reviewer queue over HTTP: next item, submit, skip, renew, undo, and the reviewer's progress.

Views authorise (through ``Project.objects.for_user`` / ``get_for``: a lease of a project the caller is not in
is 404, a role without the LABEL capability is 403), call one service or selector, and shape the answer.
The services decide everything else, including "this lease is another reviewer's" (403).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated as _validated
from labeling.api.serializers_queue import (
    QueueErrorSerializer,
    QueueNextResponseSerializer,
    QueueProgressSerializer,
    RenewResponseSerializer,
    SkipResponseSerializer,
    SubmitRequestSerializer,
    SubmitResponseSerializer,
    checkout_payload,
    lease_payload,
    submit_payload,
)
from labeling.models import Capability, Project, TaxonomyVersion, role_allows
from labeling.selectors import queue_progress
from labeling.services.annotations import annotation_submit, annotation_undo, lease_renew, lease_skip
from labeling.services.privacy import masked_item
from labeling.services.queues import queue_checkout_next, queue_retry_after

ERRORS = {
    400: OpenApiResponse(QueueErrorSerializer, description="Invalid input; `detail` names what is wrong."),
    403: OpenApiResponse(QueueErrorSerializer, description="Your role may not label here, or the lease is not yours."),
    404: OpenApiResponse(QueueErrorSerializer, description="No such project or lease among your projects."),
    409: OpenApiResponse(QueueErrorSerializer, description="The lease expired, was already used, or the undo window "
                                                      "closed; `detail` says which."),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}




def _lease_project(request: Request, lease_id: int) -> Project:
    """The project of ``lease_id`` if the caller is a member with the LABEL capability (else 404 / 403).

    One query, scoped by ``Project.objects.for_user`` like every lookup (a lease id of another project is 404).
    """
    project: Project | None = (
        Project.objects.for_user(request.user).filter(leases__id=lease_id)
        .select_related("current_taxonomy_version").annotate(caller_role=F("memberships__role")).first()
    )
    if project is None:
        raise Http404
    role: str = project.caller_role  # type: ignore[attr-defined]
    if not role_allows(role, Capability.LABEL):
        raise PermissionDenied(f"your role ({role}) may not label here")
    return project


def _version_number(project: Project, version_id: int | None) -> int | None:
    """The number of taxonomy version ``version_id``; free when it is the project's current one (selected with it)."""
    if version_id is None:
        return None
    current = project.current_taxonomy_version
    if current is not None and current.pk == version_id:
        return current.number
    number: int | None = TaxonomyVersion.objects.filter(pk=version_id).values_list("number", flat=True).first()
    return number


class QueueNextView(APIView):
    """Lease the next item to label (or get back the one you already hold)."""

    @extend_schema(
        operation_id="queue_next", request=None,
        responses={200: QueueNextResponseSerializer,
                   204: OpenApiResponse(description=(
                       "Nothing is left for you right now. With a Retry-After header, items you could still take "
                       "are held by other reviewers and may come back (a skip or an expired lease): ask again "
                       "after that many seconds. Without it, you are done in this project.")),
                   **_errors(403, 404, 409)},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = Project.objects.select_related("current_taxonomy_version").get_for(
            request.user, slug, Capability.LABEL)
        lease = queue_checkout_next(project=project, reviewer=request.user)  # type: ignore[arg-type]
        if lease is None:
            retry_after = queue_retry_after(project=project, reviewer=request.user)  # type: ignore[arg-type]
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return Response(status=status.HTTP_204_NO_CONTENT, headers=headers)
        payload = checkout_payload(lease, taxonomy_version=_version_number(project, lease.taxonomy_version_id))
        # The reviewer sees the project's PII masked (labeling/services/privacy.py); stored text never changes.
        return Response({**payload, "item": masked_item(project, payload["item"])})


class LeaseSubmitView(APIView):
    """Submit labels for the item of a lease you hold."""

    @extend_schema(
        operation_id="lease_submit", request=SubmitRequestSerializer,
        responses={201: SubmitResponseSerializer,
                   200: OpenApiResponse(SubmitResponseSerializer,
                                        description="A replay of an earlier submit with the same idempotency_key."),
                   **_errors(400, 403, 404, 409)},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        project = _lease_project(request, lease_id)
        body = _validated(SubmitRequestSerializer, request.data)
        annotation, created = annotation_submit(
            lease_id=lease_id, reviewer=request.user, labels=body["labels"],  # type: ignore[arg-type]
            idempotency_key=body.get("idempotency_key"), lead_time_ms=body.get("lead_time_ms"),
            comment=body.get("comment") or "",
        )
        current_id = project.current_taxonomy_version_id
        current_number = _version_number(project, current_id)
        return Response(
            submit_payload(annotation, current_version_id=current_id, current_version_number=current_number),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class LeaseSkipView(APIView):
    """Skip the item: it goes back to the queue for others, never to you."""

    @extend_schema(operation_id="lease_skip", request=None,
                   responses={200: SkipResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        _lease_project(request, lease_id)
        lease = lease_skip(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        return Response({"lease": lease_payload(lease), "state": lease.state})


class LeaseRenewView(APIView):
    """Keep holding the item for another lease period (from now)."""

    @extend_schema(operation_id="lease_renew", request=None,
                   responses={200: RenewResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        _lease_project(request, lease_id)
        lease = lease_renew(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        return Response({"lease": lease_payload(lease)})


class LeaseUndoView(APIView):
    """Take back your last submit (within the undo window); the same lease is active again."""

    @extend_schema(operation_id="lease_undo", request=None,
                   responses={200: QueueNextResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        project = _lease_project(request, lease_id)
        lease = annotation_undo(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        number = lease.taxonomy_version.number if lease.taxonomy_version is not None else None
        payload = checkout_payload(lease, taxonomy_version=number)
        return Response({**payload, "item": masked_item(project, payload["item"])})


class ProgressView(APIView):
    """Project progress and your own counts, for the project page."""

    @extend_schema(operation_id="project_progress", responses={200: QueueProgressSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(queue_progress(project=project, reviewer=request.user))  # type: ignore[arg-type]
