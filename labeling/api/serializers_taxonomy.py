"""Request and response shapes of the taxonomy endpoints (they document the OpenAPI schema).

Requests are validated by the services (taxonomy_io / taxonomy_migrations), which name the path of
the bad node; these serializers describe the shapes for the schema and check the simple envelopes.
"""

from __future__ import annotations

from rest_framework import serializers


class LabelNodeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, help_text="Guideline, Markdown (at most 100,000 chars).")
    severity = serializers.IntegerField(min_value=0, max_value=10, required=False)
    action = serializers.CharField(allow_blank=True, required=False, help_text="e.g. remove, age_restrict, allow")
    positive_examples = serializers.ListField(child=serializers.CharField(), required=False)
    negative_examples = serializers.ListField(child=serializers.CharField(), required=False)
    deprecated = serializers.BooleanField(required=False)
    children = serializers.ListField(child=serializers.DictField(), required=False,
                                     help_text="Nested labels of this same shape.")


class LabelNodeOutSerializer(LabelNodeSerializer):
    description_html = serializers.CharField(help_text="The guideline rendered from Markdown and sanitised (nh3).")
    is_leaf = serializers.BooleanField()
    path = serializers.CharField(help_text="Where the node sits in the document, e.g. labels[0].children[1].")


class TaxonomyDocumentSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The contract's taxonomy JSON. ``labels`` may also be flat: nodes naming a ``parent`` key."""

    name = serializers.CharField(max_length=200)
    multi_label = serializers.BooleanField(required=False)
    allow_non_leaf = serializers.BooleanField(required=False)
    labels = LabelNodeSerializer(many=True)


class MigrationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    kind = serializers.ChoiceField(choices=["rename", "merge", "split", "deprecate"])
    sources = serializers.ListField(child=serializers.CharField(), help_text="Keys in the current version.")
    targets = serializers.ListField(child=serializers.CharField(), required=False,
                                    help_text="Keys in the draft (none for deprecate).")
    requeue_priority = serializers.IntegerField(
        min_value=1, max_value=1000, required=False,
        help_text="Split/deprecate: queue boost of the re-queued items (higher is served first).",
    )


class DraftWriteSerializer(TaxonomyDocumentSerializer):
    migrations = MigrationSerializer(many=True, required=False)


class TaxonomyVersionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    number = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    name = serializers.CharField()
    multi_label = serializers.BooleanField()
    allow_non_leaf = serializers.BooleanField()
    changelog = serializers.CharField()
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True)
    published_by = serializers.CharField(allow_null=True)
    labels = LabelNodeOutSerializer(many=True)


class VersionListItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    number = serializers.IntegerField()
    status = serializers.CharField()
    name = serializers.CharField()
    multi_label = serializers.BooleanField()
    allow_non_leaf = serializers.BooleanField()
    changelog = serializers.CharField()
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True)
    published_by = serializers.CharField(allow_null=True)
    n_labels = serializers.IntegerField()
    is_current = serializers.BooleanField()
    migrations = MigrationSerializer(many=True)


class FieldChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        # "fields" is a Serializer attribute, so the field of that name is declared here.
        fields = super().get_fields()
        fields["fields"] = serializers.DictField(help_text='{"field": {"from": old, "to": new}}')
        return fields


class DiffLabelSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    name = serializers.CharField()

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        # "parent" is a Field attribute, so the field of that name is declared here.
        fields = super().get_fields()
        fields["parent"] = serializers.CharField(allow_null=True)
        return fields


class DiffMigrationSerializer(MigrationSerializer):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()


class DiffSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # "from" is a Python keyword: declared through the fields mapping below.
    to = serializers.IntegerField()
    header = serializers.DictField()
    added = DiffLabelSerializer(many=True)
    removed = DiffLabelSerializer(many=True)
    changed = FieldChangeSerializer(many=True)
    migrations = DiffMigrationSerializer(many=True)

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField()
        return fields


class DraftSerializer(serializers.Serializer):  # type: ignore[type-arg]
    exists = serializers.BooleanField(help_text="False: no draft yet; document is the current version's.")
    based_on = serializers.IntegerField(allow_null=True)
    document = TaxonomyDocumentSerializer(allow_null=True)
    migrations = MigrationSerializer(many=True)


class ProblemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    path = serializers.CharField()
    message = serializers.CharField()


class MigrationPreviewSerializer(MigrationSerializer):
    annotations_mapped = serializers.IntegerField()
    annotations_requeued = serializers.IntegerField()
    items_requeued = serializers.IntegerField()


class PreviewSerializer(serializers.Serializer):  # type: ignore[type-arg]
    based_on = serializers.IntegerField(allow_null=True)
    publishable = serializers.BooleanField()
    problems = ProblemSerializer(many=True)
    annotations_total = serializers.IntegerField()
    annotations_unchanged = serializers.IntegerField()
    annotations_mapped = serializers.IntegerField(help_text="Answers whose labels a rename or merge changes.")
    annotations_requeued = serializers.IntegerField(help_text="Answers a split or deprecation makes undeterminable.")
    annotations_stale = serializers.IntegerField()
    items_requeued = serializers.IntegerField()
    items_requeued_without_eligible_reviewer = serializers.IntegerField(
        help_text="Re-queued items every current labeller has already annotated (nobody can relabel them)."
    )
    migrations = MigrationPreviewSerializer(many=True)


class PublishSerializer(serializers.Serializer):  # type: ignore[type-arg]
    changelog = serializers.CharField(max_length=5000, help_text="What changed; shown in the history.")
