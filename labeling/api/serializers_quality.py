"""Request and response shapes of the quality endpoints: stats and adjudications.

Responses are plain dicts built by labeling/selectors/quality.py; the serializers below describe them for the
OpenAPI schema (tests/labeling/api/test_quality_api.py checks that the views' keys match). Request serializers
validate input before any service runs.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling.models import Adjudication, SuspicionState

# --- requests ---------------------------------------------------------------------------------------------------


@extend_schema_field({"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "description": "Label keys of the project's current taxonomy version."})
class DecisionLabelsField(serializers.JSONField):
    """Passed through: the service validates the keys against the taxonomy and names any bad one."""


class AdjudicationOpenSerializer(serializers.Serializer):  # type: ignore[type-arg]
    external_id = serializers.CharField(max_length=255)
    note = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="",
                                 trim_whitespace=False)


class AdjudicationDecideSerializer(serializers.Serializer):  # type: ignore[type-arg]
    labels = DecisionLabelsField()
    note = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="",
                                 trim_whitespace=False)
    revise = serializers.BooleanField(required=False, default=False,
                                      help_text="Required to change a decision already made.")


class AdjudicationListQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    state = serializers.ChoiceField(choices=Adjudication.State.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)
    offset = serializers.IntegerField(min_value=0, required=False, default=0)


# --- responses --------------------------------------------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):  # type: ignore[type-arg]
    items = serializers.IntegerField(help_text="Pool items (gold items not included).")
    gold_items = serializers.IntegerField()
    finished = serializers.IntegerField()
    open = serializers.IntegerField()
    labelled = serializers.IntegerField(help_text="Pool items with at least one answer.")
    annotations = serializers.IntegerField()
    reviewers = serializers.IntegerField()


class LabelAlphaSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    name = serializers.CharField()
    alpha = serializers.FloatField(allow_null=True)
    n_units = serializers.IntegerField()


class AgreementSummarySerializer(serializers.Serializer):  # type: ignore[type-arg]
    alpha = serializers.FloatField(allow_null=True, help_text="Krippendorff's alpha (nominal); null when undefined.")
    n_units = serializers.IntegerField()
    per_label = LabelAlphaSerializer(many=True)


class KappaSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewer_a = serializers.CharField()
    reviewer_b = serializers.CharField()
    kappa = serializers.FloatField(allow_null=True)
    n_items = serializers.IntegerField()
    observed = serializers.FloatField(allow_null=True)


class ConfusionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    labels = serializers.ListField(child=serializers.CharField())
    matrix = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()))
    definition = serializers.CharField()


class AgreementSerializer(AgreementSummarySerializer):
    n_values = serializers.IntegerField()
    method = serializers.CharField()
    kappa = KappaSerializer(many=True)
    confusion = ConfusionSerializer()


class LabelPrevalenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    name = serializers.CharField()
    estimate = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    n_sample = serializers.IntegerField()
    sample_positives = serializers.FloatField(allow_null=True)
    naive = serializers.FloatField(allow_null=True,
                                   help_text="Share among all labelled items: biased, shown for contrast.")
    census_part = serializers.FloatField(required=False, allow_null=True)
    method = serializers.CharField(required=False)


class PrevalenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    estimator = serializers.CharField()
    confidence = serializers.FloatField()
    population = serializers.IntegerField()
    labelled = serializers.IntegerField()
    unreadable = serializers.IntegerField()
    n_sample = serializers.IntegerField(help_text="Exploration (probability-sample) items the estimate rests on.")
    n_rounds = serializers.IntegerField(help_text="Sampling rounds: one per ranking with picks, one per run of the "
                                                  "random fallback order.")
    labels = LabelPrevalenceSerializer(many=True)


class WeakLabelSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    n = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField()


class GoldAlertSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewer = serializers.CharField()
    accuracy = serializers.FloatField()
    n_gold = serializers.IntegerField()
    threshold = serializers.FloatField()
    weakest_labels = WeakLabelSerializer(many=True)
    message = serializers.CharField()


class AdjudicationCountsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    pending = serializers.IntegerField()
    decided = serializers.IntegerField()


class PropagationPrecisionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    label = serializers.CharField()  # type: ignore[assignment]  # DRF pops declared fields; the stubs cannot know
    propagated = serializers.IntegerField(help_text="Propagated answers carrying the label.")
    verified = serializers.IntegerField(help_text="Of those picked for verification, how many a human answered.")
    agreements = serializers.IntegerField(help_text="Verified ones the human gave the same labels to.")
    precision = serializers.FloatField(allow_null=True, help_text="agreements / verified; null until one is verified.")
    low = serializers.FloatField(allow_null=True, help_text="Wilson 95% interval (continuity-corrected).")
    high = serializers.FloatField(allow_null=True)


class LanguageProgressSerializer(serializers.Serializer):  # type: ignore[type-arg]
    items = serializers.IntegerField()
    finished = serializers.IntegerField()
    labelled = serializers.IntegerField()
    open = serializers.IntegerField()
    annotations = serializers.IntegerField()


class LanguageAgreementSerializer(serializers.Serializer):  # type: ignore[type-arg]
    alpha = serializers.FloatField(allow_null=True)
    n_units = serializers.IntegerField()


class LanguagePrevalenceLabelSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    name = serializers.CharField()
    estimate = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    naive = serializers.FloatField(allow_null=True)


class LanguagePrevalenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    population = serializers.IntegerField()
    n_sample = serializers.IntegerField()
    labels = LanguagePrevalenceLabelSerializer(many=True)


class LanguageModelSerializer(serializers.Serializer):  # type: ignore[type-arg]
    n = serializers.IntegerField()
    macro_f1 = serializers.FloatField(allow_null=True)
    accuracy = serializers.FloatField(allow_null=True, required=False)
    average_precision = serializers.FloatField(allow_null=True)


class LanguageFiguresSerializer(serializers.Serializer):  # type: ignore[type-arg]
    language = serializers.CharField(help_text=(
        'ISO 639 code (Item.language); "und" for items whose language the detector could not tell, "unknown" '
        "for items stored before detection existed."))
    progress = LanguageProgressSerializer()
    agreement = LanguageAgreementSerializer()
    prevalence = LanguagePrevalenceSerializer(help_text="The language as its own population (a domain estimate).")
    model = LanguageModelSerializer(allow_null=True, help_text=(
        "The active model's cross-validated figures on this language's labels; null below 20 labels or with "
        "one class."))


class ByLanguageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    model_version = serializers.IntegerField(allow_null=True)
    languages = LanguageFiguresSerializer(many=True, help_text="Largest language first.")


class StatsSummarySerializer(serializers.Serializer):  # type: ignore[type-arg]
    project = serializers.CharField()
    progress = ProgressSerializer()
    agreement = AgreementSummarySerializer()
    prevalence = PrevalenceSerializer()
    adjudications = AdjudicationCountsSerializer()
    alerts = GoldAlertSerializer(many=True)
    propagation = PropagationPrecisionSerializer(many=True, help_text="Measured propagation precision per label.")


    by_language = ByLanguageSerializer(help_text=(
        "Progress, agreement, prevalence and model quality per language (labeling/selectors/languages.py)."))


class SuggestionFiguresSerializer(serializers.Serializer):  # type: ignore[type-arg]
    shown = serializers.IntegerField()
    followed = serializers.IntegerField()
    follow_rate = serializers.FloatField(allow_null=True)
    hidden = serializers.IntegerField()
    hidden_matched = serializers.IntegerField()
    hidden_match_rate = serializers.FloatField(allow_null=True)
    automation_bias = serializers.FloatField(allow_null=True)
    automation_bias_low = serializers.FloatField(allow_null=True)
    automation_bias_high = serializers.FloatField(allow_null=True)


class ReviewerRowSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewer = serializers.CharField()
    annotations = serializers.IntegerField()
    last_7_days = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    items_per_hour = serializers.FloatField(allow_null=True)
    skipped = serializers.IntegerField()
    skip_rate = serializers.FloatField(allow_null=True)
    consensus_agreement = serializers.FloatField(allow_null=True)
    consensus_compared = serializers.IntegerField()
    n_gold = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    gold_recent_accuracy = serializers.FloatField(required=False, allow_null=True)
    gold_by_label = serializers.DictField()
    flagged = serializers.BooleanField()
    suggestions = SuggestionFiguresSerializer(allow_null=True)


class ReviewerStatsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewers = ReviewerRowSerializer(many=True)
    alerts = GoldAlertSerializer(many=True)
    gold_threshold = serializers.FloatField()
    gold_min_answers = serializers.IntegerField()
    suggestions = SuggestionFiguresSerializer(allow_null=True)
    definitions = serializers.DictField(child=serializers.CharField())


class RankingHealthSerializer(serializers.Serializer):  # type: ignore[type-arg]
    version = serializers.IntegerField(allow_null=True)
    entries = serializers.IntegerField()
    open_entries = serializers.IntegerField()
    consumed_share = serializers.FloatField(allow_null=True)
    labels_since_served = serializers.IntegerField(allow_null=True)


class QueueHealthSerializer(ProgressSerializer):
    leases_out = serializers.IntegerField()
    leases_expired_unclosed = serializers.IntegerField()
    oldest_lease_seconds = serializers.FloatField(allow_null=True)
    ranking = RankingHealthSerializer()
    answers_last_hour = serializers.IntegerField()
    answers_last_day = serializers.IntegerField()
    seconds_since_last_answer = serializers.FloatField(allow_null=True)
    adjudications_pending = serializers.IntegerField()
    adjudications_decided = serializers.IntegerField()


class TimelineBucketSerializer(serializers.Serializer):  # type: ignore[type-arg]
    start = serializers.DateField()
    answers = serializers.IntegerField()
    alpha = serializers.FloatField(allow_null=True)
    alpha_units = serializers.IntegerField()
    alpha_cumulative = serializers.FloatField(allow_null=True)
    alpha_cumulative_units = serializers.IntegerField()
    alpha_by_label_cumulative = serializers.DictField(child=serializers.FloatField(allow_null=True))
    labels = serializers.DictField(child=serializers.IntegerField())


class DistributionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    name = serializers.CharField()
    items = serializers.IntegerField()


class TimelineSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.ChoiceField(choices=["day", "week"])
    buckets = TimelineBucketSerializer(many=True)
    labels = serializers.ListField(child=serializers.CharField())
    label_names = serializers.DictField(child=serializers.CharField(), required=False)
    distribution = DistributionSerializer(many=True)


class AnswerSerializer(serializers.Serializer):  # type: ignore[type-arg]
    reviewer = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField())
    mapped_labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    comment = serializers.CharField()
    lead_time_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    taxonomy_version = serializers.IntegerField()


class AdjudicationItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(help_text="Plain text: render it as text, never as HTML.")
    meta = serializers.DictField()


class AdjudicationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Adjudication.State.choices)
    reason = serializers.ChoiceField(choices=Adjudication.Reason.choices)
    item = AdjudicationItemSerializer()
    answers = AnswerSerializer(many=True)
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    taxonomy_version = serializers.IntegerField(allow_null=True)
    note = serializers.CharField()
    decided_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class AdjudicationPageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    count = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    results = AdjudicationSerializer(many=True)


# --- suspected label errors ----------------------------------------------------------------------------------------


class LabelErrorListQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    state = serializers.ChoiceField(choices=SuspicionState.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)
    offset = serializers.IntegerField(min_value=0, required=False, default=0)


class _SuspectItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(help_text="Masked where the project masks PII.")
    meta = serializers.JSONField()


class LabelErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    item = _SuspectItemSerializer()
    given_label = serializers.CharField(help_text="The training label the model disagreed with.")
    suggested_label = serializers.CharField(help_text="The model's top class, from a model that never saw it.")
    self_confidence = serializers.FloatField(help_text="Out-of-fold probability of the given label.")
    rank = serializers.IntegerField(help_text="Position in the detector's ranking (0 = most suspect).")
    model_version = serializers.IntegerField()
    state = serializers.ChoiceField(choices=SuspicionState.choices)
    open = serializers.BooleanField(help_text="Still unresolved: exports flag the row suspected_error.")
    route_reason = serializers.CharField(help_text="Why it went to a re-check or to a lead (audited).")
    adjudication_id = serializers.IntegerField(allow_null=True)
    resolved_labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    created_at = serializers.DateTimeField()
    routed_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)


class LabelErrorPageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Suspicions per state, all states.")
    count = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    results = LabelErrorSerializer(many=True)
