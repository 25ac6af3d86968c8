"""Label propagation as the dashboard and the stats API read it: the measured precision per label.

The rules and the writes live in labeling/services/propagation.py (its essay explains verification); here only the
figure: of the propagated answers picked for verification that a human has since answered, how many the human
agreed with, with a Wilson interval (labeling/stats/proportions.py).
"""

from __future__ import annotations

from typing import Any

from labeling.models import Annotation, AnswerSource, Project
from labeling.stats.proportions import wilson_interval


def propagation_precision(*, project: Project, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per label: propagated answers, how many of the verification share a human has answered (verified), how many
    of those the human agreed with (same set of labels), and the precision with its Wilson interval (None until one
    is verified). A verified answer counts for each label it carries."""
    propagated = list(Annotation.objects.filter(project=project, source=AnswerSource.PROPAGATED)
                      .values_list("item_id", "labels", "verification"))
    checked = [(item_id, labels) for item_id, labels, verification in propagated if verification]
    human: dict[int, list[str]] = {}
    for item_id, labels in (Annotation.objects.filter(item_id__in=[item_id for item_id, _l in checked],
                                                      source=AnswerSource.HUMAN)
                            .order_by("-created_at", "-id").values_list("item_id", "labels")):
        human[item_id] = labels  # the earliest human answer wins: read newest first, overwritten by older ones
    figures: dict[str, dict[str, int]] = {}
    for _item_id, labels, _verification in propagated:
        for key in labels:
            figures.setdefault(key, {"propagated": 0, "verified": 0, "agreements": 0})["propagated"] += 1
    for item_id, labels in checked:
        if item_id not in human:
            continue
        agree = set(human[item_id]) == set(labels)
        for key in labels:
            figures[key]["verified"] += 1
            figures[key]["agreements"] += int(agree)
    rows = []
    for key in sorted(figures):
        row: dict[str, Any] = {"label": key, **figures[key], "precision": None, "low": None, "high": None}
        if row["verified"]:
            low, high = wilson_interval(row["agreements"], row["verified"], confidence)
            row.update(precision=row["agreements"] / row["verified"], low=low, high=high)
        rows.append(row)
    return rows
