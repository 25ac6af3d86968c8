"""Match banks over HTTP: list and create banks, confirm items or clusters, deconfirm entries, export and import.

Thin views: authorise through ``Project.objects.get_for`` (any member reads; policy leads and admins change, and
export, since a bank is policy), validate, call labeling/services/banks.py (its essay states the rules). A bank
document holds hashes and MinHash signatures only, never text.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.api.views_quality import _errors
from labeling.models import BankPolarity, Capability, Project
from labeling.services.banks import (
    bank_confirm,
    bank_create,
    bank_entries,
    bank_entry_deconfirm,
    bank_export,
    bank_get,
    bank_import,
    bank_list,
    bank_summary,
)


class BankCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    label = serializers.CharField(max_length=100, help_text="A label key of the project's current taxonomy.")  # type: ignore[assignment]
    polarity = serializers.ChoiceField(choices=BankPolarity.choices, default=BankPolarity.VIOLATING,
                                       help_text="violating (matches go to the front of the queue) or benign "
                                                 "(matches only show their evidence).")
    threshold = serializers.FloatField(min_value=0.01, max_value=1.0, default=0.8,
                                       help_text="A near match needs estimated Jaccard similarity at least this.")


class BankSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    polarity = serializers.ChoiceField(choices=BankPolarity.choices)
    threshold = serializers.FloatField()
    created_at = serializers.DateTimeField()
    entries_confirmed = serializers.IntegerField()
    entries_deconfirmed = serializers.IntegerField()


class BankEntrySerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    exact_key = serializers.CharField(help_text="BLAKE2b-128 of the normalised text, hex.")
    kind = serializers.CharField(help_text="item, cluster or imported.")
    status = serializers.CharField(help_text="confirmed or deconfirmed.")
    source_item = serializers.IntegerField(allow_null=True, help_text="The local item it came from, if any.")
    confirmed_by = serializers.CharField(allow_null=True)
    confirmed_at = serializers.DateTimeField()
    deconfirmed_by = serializers.CharField(allow_null=True)
    deconfirmed_at = serializers.DateTimeField(allow_null=True)
    live_matches = serializers.IntegerField()


class BankDetailSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bank = BankSerializer()
    entries = BankEntrySerializer(many=True)


class BankConfirmSerializer(serializers.Serializer):  # type: ignore[type-arg]
    items = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000)
    with_cluster = serializers.BooleanField(default=False,
                                            help_text="Confirm every member of the items' clusters too.")


class BankConfirmResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bank = serializers.IntegerField()
    items = serializers.ListField(child=serializers.IntegerField())
    signatures = serializers.IntegerField(help_text="Signatures read (members included).")
    entries = serializers.ListField(child=serializers.IntegerField(), help_text="Entries created or re-confirmed.")


class BankDeconfirmResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    entry = serializers.IntegerField()
    withdrawn = serializers.IntegerField(help_text="Matches withdrawn.")
    items = serializers.ListField(child=serializers.IntegerField(), help_text="Items whose match was withdrawn.")


class BankEntryDocumentSerializer(serializers.Serializer):  # type: ignore[type-arg]
    exact_key = serializers.CharField()
    minhash = serializers.CharField(help_text="64 little-endian uint32 MinHash values, base64.")
    kind = serializers.CharField(required=False)
    confirmed_at = serializers.DateTimeField(required=False)


class BankDocumentSerializer(serializers.Serializer):  # type: ignore[type-arg]
    format = serializers.CharField(help_text="sift-match-bank")
    version = serializers.IntegerField()
    signature = serializers.DictField(help_text="The signature scheme; an import must name this project's.")
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    polarity = serializers.ChoiceField(choices=BankPolarity.choices)
    threshold = serializers.FloatField()
    entries = BankEntryDocumentSerializer(many=True)


def _project(request: Request, slug: str, capability: str) -> Project:
    project: Project = Project.objects.get_for(request.user, slug, capability)
    return project


class BankListView(APIView):
    @extend_schema(operation_id="banks_list", responses={200: BankSerializer(many=True), **_errors(403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        """The project's match banks with their entry counts (any member)."""
        return Response(bank_list(project=_project(request, slug, Capability.VIEW)))

    @extend_schema(operation_id="banks_create", request=BankCreateSerializer,
                   responses={201: BankSerializer, **_errors(400, 403, 404, 409)})
    def post(self, request: Request, slug: str) -> Response:
        """Create a bank for a label (policy leads, admins)."""
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        body = validated(BankCreateSerializer, request.data)
        bank = bank_create(actor=request.user, project=project, name=body["name"], label_key=body["label"],
                           polarity=body["polarity"], threshold=body["threshold"])
        return Response(bank_summary(bank) | {"entries_confirmed": 0, "entries_deconfirmed": 0},
                        status=status.HTTP_201_CREATED)


class BankDetailView(APIView):
    @extend_schema(operation_id="banks_detail", responses={200: BankDetailSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str, bank_id: int) -> Response:
        """A bank and its entries: signatures and provenance, never text (any member)."""
        project = _project(request, slug, Capability.VIEW)
        bank = bank_get(project=project, bank_id=bank_id)
        entries = bank_entries(bank=bank)
        confirmed = sum(e["status"] == "confirmed" for e in entries)
        return Response({"bank": bank_summary(bank) | {"entries_confirmed": confirmed,
                                                       "entries_deconfirmed": len(entries) - confirmed},
                         "entries": entries})


class BankConfirmView(APIView):
    @extend_schema(operation_id="banks_confirm", request=BankConfirmSerializer,
                   responses={200: BankConfirmResultSerializer, **_errors(400, 403, 404)})
    def post(self, request: Request, slug: str, bank_id: int) -> Response:
        """Confirm items (or their whole clusters) into the bank; matching items are found by the worker."""
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        bank = bank_get(project=project, bank_id=bank_id)
        body = validated(BankConfirmSerializer, request.data)
        return Response(bank_confirm(actor=request.user, bank=bank, item_ids=body["items"],
                                     with_cluster=body["with_cluster"]))


class BankDeconfirmView(APIView):
    @extend_schema(operation_id="banks_entry_deconfirm", request=None,
                   responses={200: BankDeconfirmResultSerializer, **_errors(403, 404)})
    def post(self, request: Request, slug: str, bank_id: int, entry_id: int) -> Response:
        """Deconfirm an entry: its matches are withdrawn and their queue boosts taken back."""
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        bank = bank_get(project=project, bank_id=bank_id)
        return Response(bank_entry_deconfirm(actor=request.user, bank=bank, entry_id=entry_id))


class BankExportView(APIView):
    @extend_schema(operation_id="banks_export", responses={200: BankDocumentSerializer, **_errors(403, 404)})
    def get(self, request: Request, slug: str, bank_id: int) -> Response:
        """The bank as a JSON document of hashes and signatures (no text, item ids or names) to share."""
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        return Response(bank_export(actor=request.user, bank=bank_get(project=project, bank_id=bank_id)))


class BankImportView(APIView):
    @extend_schema(operation_id="banks_import", request=BankDocumentSerializer,
                   parameters=[OpenApiParameter("name", str, required=False,
                                                description="Name the new bank (default: the document's).")],
                   responses={201: BankSerializer, **_errors(400, 403, 404, 409)})
    def post(self, request: Request, slug: str) -> Response:
        """Create a bank from an exported document; the project's items are matched against it by the worker.
        A bad document is refused with its first problem, and nothing is written."""
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        name: Any = request.query_params.get("name")
        return Response(bank_import(actor=request.user, project=project, payload=request.data, name=name),
                        status=status.HTTP_201_CREATED)
