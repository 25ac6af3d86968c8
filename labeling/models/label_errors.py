"""Suspected label errors: answers the model confidently disagrees with, and what the re-check made of them.

Written in two halves, each through this module:

- the learning side, at retrain (learning/services/label_errors.py), records *candidates* with
  ``SuspectedError.objects.record``: one row per item, ever (a unique constraint), so retraining twice, or a
  hundred times, never suspects the same answer twice, and a suspicion a human has settled is never re-raised;
- the human side (labeling/services/label_errors.py) routes each new row to a re-check (one more answer from
  another reviewer) or to adjudication (the answers already disagree), and settles it from the re-check's outcome.

States: ``new`` (recorded, not routed yet) -> ``recheck`` or ``adjudication`` (routed) -> ``confirmed`` (the
re-check or a lead changed the answer: the error was real, the corrected label is the adjudication's) or
``cleared`` (the answer stands). ``skipped``: routing found nothing to do (a lead had already decided the item,
or it became gold). Only the open states (new, recheck, adjudication) make an export row ``suspected_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import models


class SuspicionState(models.TextChoices):
    NEW = "new", "Found, not routed yet"
    RECHECK = "recheck", "Waiting for another reviewer"
    ADJUDICATION = "adjudication", "Waiting for a policy lead"
    CONFIRMED = "confirmed", "Error confirmed: label corrected"
    CLEARED = "cleared", "Answer confirmed: label kept"
    SKIPPED = "skipped", "Nothing to re-check"


OPEN_STATES = (SuspicionState.NEW, SuspicionState.RECHECK, SuspicionState.ADJUDICATION)


@dataclass(frozen=True)
class Candidate:
    """One suspect answer as the detector saw it."""

    item_id: int
    given_label: str
    suggested_label: str
    self_confidence: float
    rank: int


class SuspectedErrorManager(models.Manager["SuspectedError"]):
    def record(self, *, project_id: int, model_version: int, candidates: Sequence[Candidate]) -> int:
        """Insert the candidates not suspected before (one row per item, ever); returns how many are new.

        Gold items are left out (their answer is known), and so are items a lead has already decided: a decision
        is final, and the training label of such an item is the lead's, not a reviewer's."""
        if not candidates:
            return 0
        from labeling.models.annotations import Adjudication
        from labeling.models.items import Item

        ids = [c.item_id for c in candidates]
        gold = set(Item.objects.filter(pk__in=ids, is_gold=True).values_list("pk", flat=True))
        decided = set(Adjudication.objects.filter(item_id__in=ids, state=Adjudication.State.DECIDED)
                      .values_list("item_id", flat=True))
        existing = set(self.filter(item_id__in=ids).values_list("item_id", flat=True))
        rows = [SuspectedError(project_id=project_id, item_id=c.item_id, given_label=c.given_label,
                               suggested_label=c.suggested_label, self_confidence=float(c.self_confidence),
                               rank=int(c.rank), model_version=model_version)
                for c in candidates if c.item_id not in gold | decided | existing]
        # ignore_conflicts: a concurrent run that recorded the same item first wins; the constraint keeps one row.
        self.bulk_create(rows, ignore_conflicts=True)
        return len(rows)


class SuspectedError(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    item = models.OneToOneField("labeling.Item", on_delete=models.CASCADE, related_name="suspected_error")
    given_label = models.CharField(max_length=200, help_text="The training label the model disagreed with.")
    suggested_label = models.CharField(max_length=200, help_text="The model's own top class, out of fold.")
    self_confidence = models.FloatField(help_text="Out-of-fold probability of the given label.")
    rank = models.PositiveIntegerField(help_text="Position in the detector's ranking (0 = most suspect).")
    model_version = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=SuspicionState.choices, default=SuspicionState.NEW)
    route_reason = models.CharField(max_length=200, blank=True, default="")
    # The label the item ended with when settled (the lead's decision, or the re-check's agreeing answer).
    resolved_labels = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    routed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = SuspectedErrorManager()

    class Meta:
        indexes = [models.Index(fields=["project", "state"], name="suspected_error_project_state")]

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.given_label} (model: {self.suggested_label}) {self.state}"

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES
