"""Reviewer wellness over HTTP: the project's policy, a reviewer's own blur preference, and exposure per day.

Thin views: authorise through ``Project.objects.get_for``, validate, call labeling/services/wellness.py (its essay
states the rules).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.models import BlurLevel, Capability, Project
from labeling.services.wellness import (
    exposure_by_day,
    wellness_policy_update,
    wellness_preference_set,
    wellness_settings,
)


class WellnessPolicySerializer(serializers.Serializer):  # type: ignore[type-arg]
    blur = serializers.ChoiceField(choices=BlurLevel.choices, required=False,
                                   help_text="off, severe (items predicted or known severe) or all.")
    severe_from = serializers.IntegerField(min_value=0, max_value=100, required=False,
                                           help_text="Labels with at least this taxonomy severity are severe.")
    daily_severe_budget = serializers.IntegerField(min_value=0, max_value=100_000, required=False,
                                                   help_text="Severe items per reviewer per day; 0 = no limit.")
    break_after_minutes = serializers.IntegerField(min_value=0, max_value=1440, required=False,
                                                   help_text="Break reminder after this long; 0 = never.")


class WellnessSettingsSerializer(WellnessPolicySerializer):
    my_blur = serializers.ChoiceField(choices=BlurLevel.choices, help_text="Your own level (only stricter counts).")
    effective_blur = serializers.ChoiceField(choices=BlurLevel.choices)
    my_exposure_today = serializers.IntegerField()


class WellnessPreferenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    blur = serializers.ChoiceField(choices=BlurLevel.choices)


class ExposureRowSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewer = serializers.CharField()
    day = serializers.DateField()
    answers = serializers.IntegerField()
    severe = serializers.IntegerField()
    over_budget = serializers.BooleanField()


class WellnessView(APIView):
    """The project's wellness policy and your own setting (any member); policy leads and admins change the policy."""

    @extend_schema(operation_id="wellness_settings", responses={200: WellnessSettingsSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(wellness_settings(project=project, reviewer=request.user))  # type: ignore[arg-type]

    @extend_schema(operation_id="wellness_policy_update", request=WellnessPolicySerializer,
                   responses={200: WellnessSettingsSerializer})
    def patch(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.EDIT_TAXONOMY)
        body = validated(WellnessPolicySerializer, request.data)
        wellness_policy_update(actor=request.user, project=project, **body)
        return Response(wellness_settings(project=project, reviewer=request.user))  # type: ignore[arg-type]


class WellnessPreferenceView(APIView):
    """Your own blur level in this project: it can only be as strict as the project's, or stricter."""

    @extend_schema(operation_id="wellness_preference_set", request=WellnessPreferenceSerializer,
                   responses={200: WellnessSettingsSerializer})
    def put(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.LABEL)
        body = validated(WellnessPreferenceSerializer, request.data)
        wellness_preference_set(project=project, reviewer=request.user, blur=body["blur"])  # type: ignore[arg-type]
        return Response(wellness_settings(project=project, reviewer=request.user))  # type: ignore[arg-type]


class ExposureView(APIView):
    """Severe items per reviewer per day (UTC), the last seven days: for leads watching their team's load."""

    @extend_schema(operation_id="wellness_exposure", responses={200: ExposureRowSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW_STATS)
        return Response(exposure_by_day(project=project))
