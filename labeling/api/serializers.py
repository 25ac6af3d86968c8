"""Request and response shapes for projects and auth."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from labeling.models import Project
from learning.core.vocabulary import DEFAULT_ALIAS, DEFAULT_STRATEGY, STRATEGY_CHOICES


class TokenRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1024, trim_whitespace=False, style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    token = serializers.CharField()


class ProjectCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    taxonomy = serializers.JSONField(help_text="The contract's taxonomy document.")
    overlap = serializers.IntegerField(min_value=1, max_value=20, default=1)
    strategy = serializers.ChoiceField(choices=STRATEGY_CHOICES, default=DEFAULT_ALIAS, help_text=(
        f"\"{DEFAULT_ALIAS}\" follows the default strategy ({DEFAULT_STRATEGY}) as it changes; any other name pins "
        "that strategy."))
    embedder = serializers.CharField(max_length=32, required=False, help_text=(
        "The embedder the worker uses for this project's items (minilm by default; static is the fast tier for "
        "large pools; hashing is for tests). May be changed later in the project's settings."))


class ProjectSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    role = serializers.SerializerMethodField()
    taxonomy_version = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "slug", "name", "description", "overlap", "strategy", "exploration_rate", "lease_seconds",
            "show_suggestions", "embedder", "taxonomy_version", "role", "created_at",
        ]
        read_only_fields = fields

    def get_role(self, project: Project) -> str | None:
        role: str | None = getattr(project, "caller_role", None)
        return role

    def get_taxonomy_version(self, project: Project) -> int | None:
        version: Any = project.current_taxonomy_version
        return version.number if version is not None else None
