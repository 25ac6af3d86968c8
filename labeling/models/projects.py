"""Organisations (optional), projects and per-project memberships with one role each (labeling/models/roles.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from labeling.models.roles import Role
from labeling.querysets import ProjectQuerySet

if TYPE_CHECKING:
    from labeling.models.taxonomy import TaxonomyVersion


class Organisation(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Project(models.Model):
    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.PROTECT)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")

    # The queue.
    overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Distinct reviewers each item needs.",
    )
    lease_seconds = models.PositiveIntegerField(default=600)
    gold_rate = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)])
    gold_accuracy_threshold = models.FloatField(default=0.7)

    # The learning loop.
    strategy = models.CharField(max_length=32, default="default")
    exploration_rate = models.FloatField(default=0.1, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    embedder = models.CharField(max_length=32, default="minilm")
    seed_queries = models.JSONField(default=list, blank=True, help_text="Seed queries or examples for cold start.")
    show_suggestions = models.BooleanField(default=True)
    # Denormalised from PropagationPolicy (labeling/services/propagation.py keeps it): does any label suggest its
    # cluster representative's answer? Checkout reads it off the project row it has already, so a project without
    # such a policy pays no cluster probe per lease.
    propagation_suggests = models.BooleanField(default=False, db_default=False)
    # Likewise: has any label's propagation policy ever been set? Until then a submit, an undo or a decision skips
    # propagation's look-ups altogether (a policy set back to off may still have propagated answers to withdraw).
    propagation_configured = models.BooleanField(default=False, db_default=False)
    # Share of leases whose suggestion is hidden on purpose, to measure automation bias.
    suggestion_holdout_rate = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )

    # Privacy (labeling/services/privacy.py). Masking changes what reviewers see, never what is stored.
    keep_image_originals = models.BooleanField(
        default=False, help_text="Keep each imported image as sent (never served) beside its re-encodings.")
    mask_pii = models.BooleanField(default=False, help_text="Mask PII in item text and meta wherever reviewers see it.")
    mask_detectors = models.JSONField(default=list, blank=True,
                                      help_text='Built-in detectors to apply: any of "email", "phone", "url".')
    mask_patterns = models.JSONField(default=list, blank=True,
                                     help_text='Project patterns: [{"name": slug, "pattern": RE2 regex}].')
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Hard-delete items this many days old once their labelling is complete; null keeps them.",
    )

    # The taxonomy version the queue serves; None until the first publish.
    current_taxonomy_version = models.ForeignKey(
        "labeling.TaxonomyVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
    )
    # Pointer to the ranking the queue reads (RankingEntry.ranking_version). Switching
    # rankings is one UPDATE of this column; None means "fallback order" (queues.md).
    active_ranking_version = models.PositiveIntegerField(null=True, blank=True)

    class LanguageMode(models.TextChoices):
        # The queue's use of reviewer languages (Membership.languages; labeling/services/queue_languages.py).
        OFF = "off", "Off: every reviewer is served every language"
        PREFER = "prefer", "Prefer: a reviewer's languages first, the others once none of theirs is left"
        ONLY = "only", "Only: a reviewer is served their languages (and undetermined items) alone"

    language_mode = models.CharField(max_length=8, choices=LanguageMode.choices, default=LanguageMode.OFF)

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    objects = ProjectQuerySet.as_manager()

    def __str__(self) -> str:
        return self.slug

    def published_taxonomy(self) -> TaxonomyVersion | None:
        return self.current_taxonomy_version


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    # The language codes (as Item.language stores them) this member reviews; empty: all. Used by the queue when the
    # project's language_mode is not "off".
    languages = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user_project")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id}:{self.role}"
