"""Privacy over HTTP: masking and retention settings, the audited reveal, and hard deletion on request.

Thin views: authorise through ``Project.objects.get_for`` (a non-member gets 404, a role without the capability
403), validate the body, call one service of labeling/services/privacy.py (its essay states the rules).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.models import Capability, Project
from labeling.services.privacy import (
    MAX_DELETE_REQUEST,
    MAX_PATTERNS,
    MAX_REASON_CHARS,
    item_reveal,
    items_delete,
    privacy_settings,
    project_privacy_update,
)


class MaskPatternSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=32, help_text="Lower-case slug; masked text reads [name].")
    pattern = serializers.CharField(max_length=500, trim_whitespace=False,
                                    help_text="An RE2 regular expression (no backreferences or look-around).")


class PrivacySettingsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    mask_pii = serializers.BooleanField(required=False)
    mask_detectors = serializers.ListField(
        child=serializers.ChoiceField(choices=["email", "phone", "url"]), required=False, max_length=3)
    mask_patterns = serializers.ListField(child=MaskPatternSerializer(), required=False, max_length=MAX_PATTERNS)
    retention_days = serializers.IntegerField(min_value=1, max_value=36_500, required=False, allow_null=True,
                                              help_text="Null keeps items for ever.")


class RevealRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.CharField(max_length=MAX_REASON_CHARS, required=False, allow_blank=True, default="",
                                   help_text="Why you need the raw text; kept in the audit log.")


class RevealedItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(help_text="The stored, unmasked text. Render it as text, never as HTML.")
    meta = serializers.DictField()


class DeleteRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    external_ids = serializers.ListField(child=serializers.CharField(max_length=255), min_length=1,
                                         max_length=MAX_DELETE_REQUEST)
    reason = serializers.CharField(max_length=MAX_REASON_CHARS, help_text="Why: kept in the audit tombstone.")


class DeleteResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    deleted = serializers.IntegerField()
    annotations_deleted = serializers.IntegerField()
    not_found = serializers.ListField(child=serializers.CharField(), help_text="Ids with no item (already gone).")
    snapshots_purged = serializers.ListField(child=serializers.CharField(),
                                             help_text="Names of the export snapshots removed with the items.")
    tombstones = serializers.ListField(child=serializers.IntegerField(), help_text="Audit rows written.")


class PrivacySettingsView(APIView):
    """A project's PII masking and retention settings (the MANAGE capability: admins)."""

    @extend_schema(operation_id="privacy_settings", responses={200: PrivacySettingsSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.MANAGE)
        return Response(privacy_settings(project))

    @extend_schema(operation_id="privacy_settings_update", request=PrivacySettingsSerializer,
                   responses={200: PrivacySettingsSerializer})
    def patch(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.MANAGE)
        body = validated(PrivacySettingsSerializer, request.data)
        if "mask_patterns" in body:
            body["mask_patterns"] = [dict(p) for p in body["mask_patterns"]]
        project = project_privacy_update(actor=request.user, project=project, **body)
        return Response(privacy_settings(project))


class ItemRevealView(APIView):
    """The item's unmasked text and meta, for roles that may reveal PII (policy lead, admin). Audited."""

    @extend_schema(operation_id="item_reveal", request=RevealRequestSerializer,
                   responses={200: RevealedItemSerializer,
                              404: OpenApiResponse(description="No such item in this project.")})
    def post(self, request: Request, slug: str, item_id: int) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.REVEAL_PII)
        body = validated(RevealRequestSerializer, request.data)
        return Response(item_reveal(actor=request.user, project=project, item_id=item_id,
                                    reason=body.get("reason", "")))


class ItemDeleteView(APIView):
    """Hard-delete items by external id: text, meta, annotations, vectors, snapshots. Leaves an audit tombstone."""

    @extend_schema(operation_id="items_delete", request=DeleteRequestSerializer,
                   responses={200: DeleteResultSerializer})
    def post(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.DELETE_ITEMS)
        body = validated(DeleteRequestSerializer, request.data)
        result = items_delete(actor=request.user, project=project, external_ids=body["external_ids"],
                              reason=body["reason"])
        return Response(result.as_dict())
