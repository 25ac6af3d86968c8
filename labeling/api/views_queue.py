"""The reviewer queue over HTTP: next item, submit, skip, renew, undo, and the reviewer's progress.

Views authorise (through ``Project.objects.for_user`` / ``get_for``: a lease of a project the caller is not in
is 404, a role without the LABEL capability is 403), call one service or selector, and shape the answer.
The services decide everything else, including "this lease is another reviewer's" (403).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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
    submit_body,
    submit_payload,
)
from labeling.models import Capability, Lease, Project, TaxonomyVersion
from labeling.querysets import caller_may
from labeling.rows import first_instance
from labeling.selectors.progress import queue_progress
from labeling.services.annotations import annotation_submit, annotation_undo, lease_renew, lease_skip
from labeling.services.banks import item_bank_evidence
from labeling.services.clusters import cluster_summary
from labeling.services.errors import Conflict
from labeling.services.images import item_image_block
from labeling.services.privacy import masked_item
from labeling.services.queues import queue_checkout_next, queue_retry_after
from labeling.services.wellness import lease_protection

logger = logging.getLogger(__name__)

ERRORS = {
    400: OpenApiResponse(QueueErrorSerializer, description="Invalid input; `detail` names what is wrong."),
    403: OpenApiResponse(QueueErrorSerializer, description="Your role may not label here, or the lease is not yours."),
    404: OpenApiResponse(QueueErrorSerializer, description="No such project or lease among your projects."),
    409: OpenApiResponse(QueueErrorSerializer, description="The lease expired, was already used, or the undo window "
                                                      "closed, or the submit an idempotency_key names was undone; "
                                                      "`detail` says which."),
    422: OpenApiResponse(QueueErrorSerializer, description="This idempotency_key was already used with other labels "
                                                      "or another comment: a replay sends the same body."),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}




# The caller's project, their role in it and the current taxonomy version's number, in one plain-SQL statement
# (these run on every queue request; the ORM would compile the same join each time). Scoped by membership like
# ``Project.objects.for_user`` / ``get_for``: a project or lease outside the caller's projects is not found.
_PROJECT_SQL = """
SELECT p.*, m.role AS caller_role, v.number AS current_version_number
FROM labeling_project p
JOIN labeling_membership m ON m.project_id = p.id AND m.user_id = %s
LEFT JOIN labeling_taxonomyversion v ON v.id = p.current_taxonomy_version_id
WHERE {where}
"""
_BY_SLUG = _PROJECT_SQL.format(where="p.slug = %s")
_BY_LEASE = _PROJECT_SQL.format(where="p.id = (SELECT l.project_id FROM labeling_lease l WHERE l.id = %s)")


def _labelling_project(request: Request, sql: str, key: Any) -> Project:
    """The project if the caller is a member with the LABEL capability (else 404 / 403), as ``get_for`` decides."""
    project = first_instance(Project, sql, [request.user.pk, key])
    caller_may(project.caller_role if project is not None else None, Capability.LABEL)  # type: ignore[attr-defined]
    return project  # type: ignore[return-value]


def _lease_project(request: Request, lease_id: int) -> Project:
    """The project of ``lease_id`` if the caller is a member with the LABEL capability (else 404 / 403)."""
    return _labelling_project(request, _BY_LEASE, lease_id)


def _version_number(project: Project, version_id: int | None) -> int | None:
    """The number of taxonomy version ``version_id``; free when it is the project's current one (selected with it)."""
    if version_id is None:
        return None
    known = getattr(project, "current_version_number", None)
    if version_id == project.current_taxonomy_version_id and known is not None:
        return int(known)
    number: int | None = TaxonomyVersion.objects.filter(pk=version_id).values_list("number", flat=True).first()
    return number


def _next_body(project: Project, lease: Lease, reviewer: Any) -> dict[str, Any]:
    """The queue/next 200 body for ``lease``, the item masked as the project asks (labeling/services/privacy.py)."""
    payload = checkout_payload(lease, taxonomy_version=_version_number(project, lease.taxonomy_version_id))
    # The reviewer sees the project's PII masked; stored text never changes.
    return {**payload, "item": {**masked_item(project, payload["item"]),
                                "image": item_image_block(project=project, item_id=lease.item_id)},
            "cluster": cluster_summary(project=project, item_id=lease.item_id),
            "bank_matches": item_bank_evidence(project=project, item_id=lease.item_id),
            "protection": lease_protection(project=project, reviewer=reviewer, lease=lease)}


def _checkout_or_none(request: Request, project: Project) -> dict[str, Any] | None:
    try:
        lease = queue_checkout_next(project=project, reviewer=request.user)  # type: ignore[arg-type]
    except Conflict:
        return None
    except DatabaseError:
        # The submit has committed: a checkout that fails on the database (a lock timeout, a dropped connection)
        # must not turn it into a 500 the page would retry. The page asks queue/next, which reports the error.
        logger.warning("next item after a submit failed; the submit stands", exc_info=True)
        return None
    return None if lease is None else _next_body(project, lease, request.user)


class _QueueView(APIView):
    # Token look-ups skip the ORM's query compile on every API view (labeling/api/authentication.py, the default
    # in config/settings.py); the queue's two requests per labelled item are why that matters.
    pass


class QueueNextView(_QueueView):
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
        project = _labelling_project(request, _BY_SLUG, slug)
        lease = queue_checkout_next(project=project, reviewer=request.user)  # type: ignore[arg-type]
        if lease is None:
            retry_after = queue_retry_after(project=project, reviewer=request.user)  # type: ignore[arg-type]
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return Response(status=status.HTTP_204_NO_CONTENT, headers=headers)
        return Response(_next_body(project, lease, request.user))


class LeaseSubmitView(_QueueView):
    """Submit labels for the item of a lease you hold."""

    @extend_schema(
        operation_id="lease_submit", request=SubmitRequestSerializer,
        responses={201: SubmitResponseSerializer,
                   200: OpenApiResponse(SubmitResponseSerializer,
                                        description="A replay of an earlier submit with the same idempotency_key."),
                   **_errors(400, 403, 404, 409, 422)},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        project = _lease_project(request, lease_id)
        body = submit_body(request.data)
        annotation, created = annotation_submit(
            lease_id=lease_id, reviewer=request.user, labels=body["labels"],  # type: ignore[arg-type]
            idempotency_key=body.get("idempotency_key"), lead_time_ms=body.get("lead_time_ms"),
            comment=body.get("comment") or "", project=project,
        )
        current_id = project.current_taxonomy_version_id
        current_number = _version_number(project, current_id)
        payload = submit_payload(annotation, current_version_id=current_id, current_version_number=current_number)
        if body.get("next"):
            # The labelling page's next item in the same round trip. The submit has committed by now, so nothing
            # here may turn it into an error: a checkout that cannot serve (nothing left, or a 409) gives null,
            # and queue/next then says why (204 with or without Retry-After, or the 409's message).
            payload["next"] = _checkout_or_none(request, project)
        return Response(payload, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class LeaseSkipView(_QueueView):
    """Skip the item: it goes back to the queue for others, never to you."""

    @extend_schema(operation_id="lease_skip", request=None,
                   responses={200: SkipResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        _lease_project(request, lease_id)
        lease = lease_skip(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        return Response({"lease": lease_payload(lease), "state": lease.state})


class LeaseRenewView(_QueueView):
    """Keep holding the item for another lease period (from now)."""

    @extend_schema(operation_id="lease_renew", request=None,
                   responses={200: RenewResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        _lease_project(request, lease_id)
        lease = lease_renew(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        return Response({"lease": lease_payload(lease)})


class LeaseUndoView(_QueueView):
    """Take back your last submit (within the undo window); the same lease is active again."""

    @extend_schema(operation_id="lease_undo", request=None,
                   responses={200: QueueNextResponseSerializer, **_errors(403, 404, 409)})
    def post(self, request: Request, lease_id: int) -> Response:
        project = _lease_project(request, lease_id)
        lease = annotation_undo(lease_id=lease_id, reviewer=request.user)  # type: ignore[arg-type]
        number = lease.taxonomy_version.number if lease.taxonomy_version is not None else None
        payload = checkout_payload(lease, taxonomy_version=number)
        protection = lease_protection(project=project, reviewer=request.user, lease=lease)  # type: ignore[arg-type]
        return Response({**payload, "item": {**masked_item(project, payload["item"]),
                                             "image": item_image_block(project=project, item_id=lease.item_id)},
                         "cluster": cluster_summary(project=project, item_id=lease.item_id),
                         "bank_matches": item_bank_evidence(project=project, item_id=lease.item_id),
                         "protection": protection})


class ProgressView(APIView):
    """Project progress and your own counts, for the project page."""

    @extend_schema(operation_id="project_progress", responses={200: QueueProgressSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(queue_progress(project=project, reviewer=request.user))  # type: ignore[arg-type]
