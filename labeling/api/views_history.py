"""An item's history over HTTP: every answer (reviewer, labels, comment, ...) and the adjudication state.

ADJUDICATE only (policy leads, admins): one reviewer must never see another's answers, and an ML engineer gets
the answers through ``raw`` exports. Non-members get 404; an item id of another project is a 404 too.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.views_quality import _errors, _project
from labeling.models import Capability, Item, Project, SelectionReason
from labeling.selectors.history import item_find, item_history
from labeling.services.banks import item_bank_history
from labeling.services.errors import NotFound, ValidationFailed


class HistoryItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(help_text="Plain text: render it as text, never as HTML.")
    meta = serializers.DictField()
    masked = serializers.BooleanField(help_text="PII in text, meta and comments is masked (project setting).")
    is_gold = serializers.BooleanField()
    n_done = serializers.IntegerField()
    n_required = serializers.IntegerField()


class HistoryAnswerSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    reviewer = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField(), help_text="As given, in `taxonomy_version`.")
    taxonomy_version = serializers.IntegerField()
    labels_in_current_version = serializers.ListField(
        child=serializers.CharField(), allow_null=True,
        help_text="The answer read in the project's current version (given there, or mapped by a label "
                  "migration); null when it cannot be determined there.")
    created_at = serializers.DateTimeField()
    lead_time_ms = serializers.IntegerField(allow_null=True)
    comment = serializers.CharField(allow_blank=True, help_text="The reviewer's comment: plain text, never HTML.")
    selection_reason = serializers.ChoiceField(choices=SelectionReason.choices)
    selection_reason_label = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)
    inclusion_probability = serializers.FloatField(allow_null=True)
    suggestion_shown = serializers.JSONField(allow_null=True)
    suggestion_withheld = serializers.BooleanField(help_text="The project's suggestion hold-out hid the model's "
                                                             "suggestion from this reviewer on purpose.")
    gold_correct = serializers.BooleanField(allow_null=True)


class HistoryAdjudicationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    state = serializers.CharField()
    reason = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    taxonomy_version = serializers.IntegerField(allow_null=True)
    note = serializers.CharField(allow_blank=True)
    decided_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class HistoryBankMatchSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bank = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    polarity = serializers.CharField()
    entry = serializers.IntegerField()
    kind = serializers.CharField(help_text="exact or near.")
    similarity = serializers.FloatField()
    matched_at = serializers.DateTimeField()
    withdrawn_at = serializers.DateTimeField(allow_null=True, help_text="Set when the entry was deconfirmed.")


class ItemHistorySerializer(serializers.Serializer):  # type: ignore[type-arg]
    item = HistoryItemSerializer()
    taxonomy_version = serializers.IntegerField(allow_null=True, help_text="The project's current version.")
    answers = HistoryAnswerSerializer(many=True, help_text="Every answer, oldest first.")
    adjudication = HistoryAdjudicationSerializer(allow_null=True)
    bank_matches = HistoryBankMatchSerializer(many=True, help_text="Match-bank matches, withdrawn ones included.")


def _history(project: Project, item: Item | None, what: str) -> Response:
    if item is None:
        raise NotFound(f"no item {what} in project {project.slug!r}")
    history = item_history(project, item) | {"bank_matches": item_bank_history(project=project, item_id=item.pk)}
    return Response(ItemHistorySerializer(history).data)


class ItemHistoryView(APIView):
    @extend_schema(operation_id="project_item_history", responses={200: ItemHistorySerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str, item_id: int) -> Response:
        """Every answer to one item, oldest first, with comments, and its adjudication (policy leads, admins)."""
        project = _project(request, slug, Capability.ADJUDICATE)
        return _history(project, item_find(project, item_id=item_id), str(item_id))


class ItemHistoryByExternalIdView(APIView):
    @extend_schema(operation_id="project_item_history_by_external_id",
                   parameters=[OpenApiParameter("external_id", str, required=True)],
                   responses={200: ItemHistorySerializer, **_errors(400, 403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        """The same history, looked up by the item's external id."""
        project = _project(request, slug, Capability.ADJUDICATE)
        external_id = request.query_params.get("external_id", "")
        if not external_id:
            raise ValidationFailed("external_id: required", field="external_id")
        return _history(project, item_find(project, external_id=external_id), repr(external_id))
