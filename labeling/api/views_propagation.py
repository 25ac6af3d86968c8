"""Label propagation over HTTP: each label's policy and its measured precision; leads and admins change a policy.

Thin views: authorise through ``Project.objects.get_for``, validate, call labeling/services/propagation.py (its
essay states the rules) and labeling/selectors/propagation.py (the precision figure).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.api.serializers_quality import PropagationPrecisionSerializer
from labeling.models import Capability, Project, PropagationMode
from labeling.selectors.propagation import propagation_precision
from labeling.services.propagation import propagation_policies, propagation_policy_set


class PropagationPolicySerializer(serializers.Serializer):  # type: ignore[type-arg]
    label = serializers.CharField(max_length=255, help_text="A label key of the current taxonomy.")  # type: ignore[assignment]
    mode = serializers.ChoiceField(choices=PropagationMode.choices,
                                   help_text="off; suggest (members are served with the representative's label as "
                                             "the suggestion); propagate (members above the threshold get it).")
    threshold = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                       help_text="Similarity to the representative a member needs (default 0.8).")
    verification_share = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                                help_text="Share of propagated members still sent to a human "
                                                          "(default 0.05), picked by a stable hash of the item.")


class PropagationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    policies = PropagationPolicySerializer(many=True)
    precision = PropagationPrecisionSerializer(many=True)


def _body(project: Project) -> dict[str, Any]:
    return {"policies": propagation_policies(project=project), "precision": propagation_precision(project=project)}


class PropagationView(APIView):
    """Every label's propagation policy and the measured precision (any member); policy leads and admins set one
    label's policy with PUT (audited as ``propagation.policy``)."""

    @extend_schema(operation_id="propagation_settings", responses={200: PropagationSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(_body(project))

    @extend_schema(operation_id="propagation_policy_set", request=PropagationPolicySerializer,
                   responses={200: PropagationSerializer})
    def put(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.EDIT_TAXONOMY)
        body = validated(PropagationPolicySerializer, request.data)
        propagation_policy_set(actor=request.user, project=project, **body)  # type: ignore[arg-type]
        return Response(_body(project))
