"""Reviewer wellness settings: a project's protection policy and each reviewer's own (only stricter) preference.

The rules that use them (what counts as severe, the blur decision, the exposure budget, the break reminder) live in
labeling/services/wellness.py. A project without a policy row has the defaults below.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BlurLevel(models.TextChoices):
    """Ordered from least to most protective: a reviewer may only move up from the project's level."""

    OFF = "off", "Show every item"
    SEVERE = "severe", "Blur items predicted or known to be severe"
    ALL = "all", "Blur every item until revealed"


BLUR_ORDER = [BlurLevel.OFF, BlurLevel.SEVERE, BlurLevel.ALL]


class WellnessPolicy(models.Model):
    project = models.OneToOneField("labeling.Project", primary_key=True, on_delete=models.CASCADE,
                                   related_name="wellness_policy")
    blur = models.CharField(max_length=16, choices=BlurLevel.choices, default=BlurLevel.SEVERE)
    severe_from = models.PositiveSmallIntegerField(
        default=3, help_text="A label is severe when its taxonomy severity is at least this.")
    daily_severe_budget = models.PositiveIntegerField(
        default=0, help_text="Severe items a reviewer is served per day (UTC) before other work; 0 = no limit.")
    break_after_minutes = models.PositiveIntegerField(
        default=50, help_text="Remind a reviewer to pause after this long labelling without a break; 0 = never.")

    def __str__(self) -> str:
        return f"wellness policy of project {self.project_id}"


class ReviewerWellness(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    blur = models.CharField(max_length=16, choices=BlurLevel.choices, default=BlurLevel.OFF)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_wellness_pref_per_reviewer")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.project_id}: blur {self.blur}"
