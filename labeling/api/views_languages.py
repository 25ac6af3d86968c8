"""Languages over HTTP: a project's language mix with the embedder it calls for, and the embedder switch.

Thin views over labeling/services/languages.py (its essay says how languages are detected and when the
multilingual tier is recommended).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.models import Capability, Project
from labeling.services.languages import project_language_mix, project_set_embedder
from learning.core.vocabulary import EMBEDDER_NAMES


class LanguageMixSerializer(serializers.Serializer):  # type: ignore[type-arg]
    counts = serializers.DictField(child=serializers.IntegerField(),
                                   help_text="Items per ISO 639 code (fastText's codes), most frequent first.")
    undetermined = serializers.IntegerField(help_text="Items whose language the detector could not tell.")
    undetected = serializers.IntegerField(help_text=(
        "Items stored before detection existed (`manage.py detect_languages --project S` fills them in)."))
    embedder = serializers.CharField(help_text="The project's embedder now.")
    recommended_embedder = serializers.CharField(allow_null=True, help_text=(
        "`multilingual` when the project is on an English embedder and at least a fifth of its items are in "
        "other languages; else null."))


class EmbedderSerializer(serializers.Serializer):  # type: ignore[type-arg]
    embedder = serializers.ChoiceField(choices=list(EMBEDDER_NAMES))


class EmbedderChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    embedder = serializers.CharField()
    changed = serializers.BooleanField(help_text="False when the project already used this embedder.")


class LanguageMixView(APIView):
    """GET: the project's items per language and the embedder that mix calls for (any member)."""

    @extend_schema(operation_id="project_languages", responses={200: LanguageMixSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(project_language_mix(project=project))


class EmbedderView(APIView):
    """POST: switch the project's embedder (MANAGE: admins). The worker re-embeds the items the new tier has no
    vector for; the README's "Embedding tiers" gives what that costs."""

    @extend_schema(operation_id="project_embedder_update", request=EmbedderSerializer,
                   responses={200: EmbedderChangeSerializer})
    def post(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.MANAGE)
        body = validated(EmbedderSerializer, request.data)
        changed = project_set_embedder(actor=request.user, project=project, embedder=body["embedder"])
        return Response({"embedder": project.embedder, "changed": changed})
