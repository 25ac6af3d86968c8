"""Label propagation policy: per project and label, whether a human answer on a cluster's representative is
suggested to its members, propagated to them, or neither.

The rules that use it (which members are covered, which propagated answers are verified by a human, re-evaluation
after an undo or an adjudication, the measured precision) live in labeling/services/propagation.py; the pure parts
in learning/core/propagation.py. A label without a row is ``off``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from learning.core.propagation import DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_VERIFICATION_SHARE


class PropagationMode(models.TextChoices):
    OFF = "off", "Off"
    SUGGEST = "suggest", "Suggest the representative's label to members"
    PROPAGATE = "propagate", "Apply the representative's label to members"


class AnswerSource(models.TextChoices):
    """Where an Annotation came from. Adjudicated labels live on Adjudication, so they stay apart by construction."""

    HUMAN = "human", "Human"
    PROPAGATED = "propagated", "Propagated"


class PropagationPolicy(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="propagation_policies",
                                db_index=False)
    label = models.CharField(max_length=255, help_text="A label key of the project's taxonomy.")
    mode = models.CharField(max_length=16, choices=PropagationMode.choices, default=PropagationMode.OFF)
    threshold = models.FloatField(default=DEFAULT_SIMILARITY_THRESHOLD,
                                  help_text="Members at least this similar to the representative are covered.")
    verification_share = models.FloatField(default=DEFAULT_VERIFICATION_SHARE,
                                           help_text="Share of propagated members still sent to a human.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "label"], name="one_propagation_policy_per_label")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.label} {self.mode}"
