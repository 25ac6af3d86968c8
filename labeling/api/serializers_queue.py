"""Request and response shapes of the reviewer queue (CONTRACT.md, "HTTP API").

Responses are built as plain dicts by the ``*_payload`` functions (the hot path skips serializer machinery);
the serializers below describe the same shapes for the OpenAPI schema, and tests check the two agree.
Nothing here ever exposes ``Item.is_gold`` or ``Item.gold_labels``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling.api.errors import validated
from labeling.models import Annotation, BankPolarity, ClusterKind, Lease, SelectionReason
from labeling.services.gold import gold_public_selection

# --- requests ---------------------------------------------------------------------------------------------------


@extend_schema_field({"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "description": "Label keys of the lease's taxonomy version."})
class LabelKeysField(serializers.JSONField):
    """Passed through untouched: the service validates it against the taxonomy and names the bad label."""


class SubmitRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    labels = LabelKeysField()
    idempotency_key = serializers.CharField(
        max_length=128, required=False, allow_null=True, allow_blank=False,
        help_text="Client-chosen key; replaying a submit with the same key returns the first answer (200).",
    )
    lead_time_ms = serializers.IntegerField(min_value=0, max_value=2_147_483_647, required=False, allow_null=True,
                                            help_text="Time the reviewer spent on the item.")
    comment = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="",
                                    trim_whitespace=False)
    next = serializers.BooleanField(
        required=False, default=False,
        help_text="Also lease your next item and return it as `next` in the response (saves the queue/next call).",
    )


# The submit body is validated on every labelled item. DRF's serializer copies its five fields per request (about
# half a millisecond of CPU here); a body of the plain shape the labelling page sends is checked directly below, to
# the same result. Anything else (a missing or null field, a string a field would trim or refuse, "true" for
# true, a form body) goes to the serializer, so every error and every coercion stays DRF's own.
# tests/labeling/api/test_submit_body.py compares both on a table of bodies.
_KEY_MAX, _LEAD_MAX, _COMMENT_MAX = 128, 2_147_483_647, 10_000


def _plain_text(value: str) -> bool:
    # DRF's CharField refuses NUL and lone surrogates (ProhibitNull/SurrogateCharactersValidator).
    return "\x00" not in value and (value.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in value))


def _fast_submit_body(data: Any) -> dict[str, Any] | None:
    """The serializer's validated_data for a plain submit body, or None to let the serializer decide."""
    if type(data) is not dict or data.get("labels") is None:
        return None
    out: dict[str, Any] = {"labels": data["labels"]}
    if "idempotency_key" in data:
        key = data["idempotency_key"]
        if key is not None and not (type(key) is str and 0 < len(key) <= _KEY_MAX and key.isascii()
                                    and key.isprintable() and key.strip() == key):
            return None
        out["idempotency_key"] = key
    if "lead_time_ms" in data:
        lead = data["lead_time_ms"]
        if lead is not None and not (type(lead) is int and 0 <= lead <= _LEAD_MAX):
            return None
        out["lead_time_ms"] = lead
    comment = data.get("comment", "")
    if not (type(comment) is str and len(comment) <= _COMMENT_MAX and _plain_text(comment)):
        return None
    out["comment"] = comment
    following = data.get("next", False)
    if type(following) is not bool:
        return None
    out["next"] = following
    return out


def submit_body(data: Any) -> dict[str, Any]:
    """The submit request's fields, as ``SubmitRequestSerializer`` validates them (a 400 naming the field)."""
    fast = _fast_submit_body(data)
    return fast if fast is not None else validated(SubmitRequestSerializer, data)


# --- responses --------------------------------------------------------------------------------------------------


class QueueErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    detail = serializers.CharField()
    code = serializers.CharField(required=False)


class LeaseRefSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class QueueItemImageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    display = serializers.CharField(help_text="URL of the display-size re-encoding (GET, same session or token).")
    thumb = serializers.CharField(help_text="URL of the thumbnail.")
    width = serializers.IntegerField(help_text="Of the image as imported.")
    height = serializers.IntegerField()
    display_width = serializers.IntegerField()
    display_height = serializers.IntegerField()
    name = serializers.CharField(help_text="The file's name in the upload: show it as text.")


class QueueItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(help_text="Plain text: render it as text, never as HTML.")
    meta = serializers.DictField()
    masked = serializers.BooleanField(required=False, help_text=(
        "The project masks PII: matches in text and meta read [email], [phone], [url] or [pattern name]. "
        "Roles that may reveal PII get the raw item from POST /api/projects/{slug}/items/{id}/reveal."))
    image = QueueItemImageSerializer(allow_null=True, required=False, help_text="The item's image, or null.")


class SelectionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.ChoiceField(choices=SelectionReason.choices)
    score = serializers.FloatField(allow_null=True)
    model_version = serializers.IntegerField(allow_null=True, help_text="The ranking version the pick came from.")
    inclusion_probability = serializers.FloatField(allow_null=True)


class SuggestionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # The metaclass moves declared fields off the class, so this does not clash with Field.label at runtime.
    label = serializers.CharField()  # type: ignore[assignment]
    confidence = serializers.FloatField(allow_null=True)
    source = serializers.CharField(  # type: ignore[assignment]  # popped by the metaclass, as label is
        required=False, help_text="'cluster': the label a human gave this item's near-duplicate representative "
        "(propagation policy 'suggest'; confidence is the similarity). Absent: the model's suggestion.")


class ClusterMemberSerializer(serializers.Serializer):  # type: ignore[type-arg]
    item_id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=ClusterKind.choices)
    similarity = serializers.FloatField()
    text = serializers.CharField(help_text="Masked as the item's own text is.")


class ClusterSummarySerializer(serializers.Serializer):  # type: ignore[type-arg]
    size = serializers.IntegerField(help_text="Items in the near-duplicate cluster, the representative included.")
    representative_id = serializers.IntegerField()
    is_representative = serializers.BooleanField()
    kind = serializers.ChoiceField(choices=ClusterKind.choices,
                                   help_text="How this item joined its cluster.")
    similarity = serializers.FloatField(help_text="To the representative: 1.0 exact, estimated Jaccard, or cosine.")
    members = ClusterMemberSerializer(many=True, help_text="Up to three other items of the cluster.")


class BankMatchEvidenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bank = serializers.CharField(help_text="The bank's name: plain text, never HTML.")
    bank_id = serializers.IntegerField()
    label = serializers.CharField(help_text="The label key the bank is for.")  # type: ignore[assignment]
    polarity = serializers.ChoiceField(choices=BankPolarity.choices)
    entry = serializers.IntegerField(help_text="The bank entry matched.")
    kind = serializers.ChoiceField(choices=["exact", "near"], help_text="Same normalised text, or MinHash near.")
    similarity = serializers.FloatField(help_text="1.0 exact, else the estimated Jaccard similarity.")
    matched_at = serializers.DateTimeField()


class ProtectionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    blur = serializers.BooleanField(help_text="Show the item blurred until the reviewer reveals it (click or key).")
    severe = serializers.ChoiceField(choices=["known", "predicted"], allow_null=True,
                                     help_text="Known: an answer gave it a severe label; predicted: the model's.")
    exposure_today = serializers.IntegerField(help_text="Your severe answers today (UTC) in this project.")
    daily_severe_budget = serializers.IntegerField(allow_null=True, help_text="Null: no limit.")
    labelling_minutes = serializers.IntegerField(help_text="Length of your current stretch without a break.")
    break_due = serializers.BooleanField(help_text="The stretch reached the project's break reminder.")


class QueueNextResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    lease = LeaseRefSerializer()
    item = QueueItemSerializer()
    selection = SelectionSerializer()
    suggestion = SuggestionSerializer(allow_null=True)
    cluster = ClusterSummarySerializer(allow_null=True, required=False,
                                       help_text="The item's near-duplicate cluster; null when it is alone.")
    bank_matches = BankMatchEvidenceSerializer(
        many=True, required=False,
        help_text="Live match-bank matches of the item with their evidence; a known-violating match is why it was "
                  "served first, for confirmation.")
    protection = ProtectionSerializer(required=False, help_text="Reviewer wellness: blur, exposure, break reminder.")
    taxonomy_version = serializers.IntegerField(help_text="Number of the taxonomy version to label against.")


class SubmitResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    annotation_id = serializers.IntegerField()
    lease_id = serializers.IntegerField()
    item_id = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField())
    taxonomy_version = serializers.IntegerField(help_text="The version the labels were given in (the lease's).")
    taxonomy_changed = serializers.BooleanField(help_text="A newer taxonomy version was published meanwhile.")
    current_taxonomy_version = serializers.IntegerField(allow_null=True)
    undo_until = serializers.DateTimeField()
    next = QueueNextResponseSerializer(
        required=False, allow_null=True,
        help_text=("Only when the request asked for it (`next: true`): your next item, exactly as queue/next's 200 "
                   "body, or null when queue/next would not give one now (ask it for the 204 and Retry-After)."),
    )


class SkipResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    lease = LeaseRefSerializer()
    state = serializers.CharField()


class RenewResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    lease = LeaseRefSerializer()


class QueueProgressSerializer(serializers.Serializer):  # type: ignore[type-arg]
    total = serializers.IntegerField()
    finished = serializers.IntegerField()
    open = serializers.IntegerField()
    mine_today = serializers.IntegerField()
    mine_total = serializers.IntegerField()


# --- payload builders -------------------------------------------------------------------------------------------


def _public_selection(lease: Lease) -> dict[str, Any]:
    # A gold check must look like any other item, or reviewers learn to take extra care only on those.
    # The lease carries the selection facts of a real random pick (labeling/services/gold.py), shown instead.
    if lease.selection_reason == SelectionReason.GOLD:
        return gold_public_selection(lease)
    return {
        "reason": lease.selection_reason,
        "score": lease.selection_score,
        "model_version": lease.model_version,
        "inclusion_probability": lease.inclusion_probability,
    }


def checkout_payload(lease: Lease, *, taxonomy_version: int | None) -> dict[str, Any]:
    """The queue/next (and undo) body for ``lease``, whose ``item`` is loaded."""
    item = lease.item
    return {
        "lease": {"id": lease.pk, "expires_at": lease.expires_at},
        "item": {"id": item.pk, "external_id": item.external_id, "text": item.text, "meta": item.meta},
        "selection": _public_selection(lease),
        "suggestion": None if lease.suggestion_hidden else lease.suggestion,
        "taxonomy_version": taxonomy_version,
    }


def submit_payload(annotation: Annotation, *, current_version_id: int | None,
                   current_version_number: int | None) -> dict[str, Any]:
    return {
        "annotation_id": annotation.pk,
        "lease_id": annotation.lease_id,
        "item_id": annotation.item_id,
        "labels": annotation.labels,
        "taxonomy_version": annotation.taxonomy_version.number,
        "taxonomy_changed": annotation.taxonomy_version_id != current_version_id,
        "current_taxonomy_version": current_version_number,
        "undo_until": annotation.created_at + timedelta(seconds=int(settings.SIFT_UNDO_SECONDS)),
    }


def lease_payload(lease: Lease) -> dict[str, Any]:
    return {"id": lease.pk, "expires_at": lease.expires_at}
