"""Label-error detection at retrain: out-of-fold probabilities over the labelled items, confident learning
(learning/core/label_errors.py), and the flagged answers recorded as suspicions for the human side to re-check.

Kept cheap and out of reviewers' way:
- it runs after the new ranking is active (model_version_train), so no checkout ever waits for it;
- only when the project has at least ``SIFT_LABEL_ERRORS_MIN_LABELS`` single-label training labels in two or more
  classes (below that, every fold model is too weak for its disagreement to mean anything);
- with ``SIFT_LABEL_ERRORS_FOLDS`` folds (3 by default: three small logistic-regression fits over the labelled
  set, which is thousands of rows where the pool is a million);
- again only once ``SIFT_LABEL_ERRORS_EVERY`` (20) labels have arrived since the last run that checked
  (bench/label_errors_retrain.py: the check costs about three times the retrain's own fit), while the sync below
  still runs after every retrain, so re-check outcomes settle at once;
- at most ``SIFT_LABEL_ERRORS_MAX_NEW`` new suspicions per run, most suspect first, so a burst of bad answers
  becomes a steady trickle of re-checks rather than a wall of them.

A failure here is logged and recorded in the model's metrics; it never fails the model. After recording, the
human side's ``sift.labeling.label_errors_sync`` task is sent by name (the learning side never imports labeling's
services): it routes the new suspicions and settles the ones whose re-check has come back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from celery import current_app
from django.conf import settings
from django.db import transaction

from labeling.models import OPEN_STATES, Candidate, SuspectedError
from learning.core.label_errors import out_of_fold_proba, rank_label_errors
from learning.models import ModelVersion

logger = logging.getLogger(__name__)

SYNC_TASK = "sift.labeling.label_errors_sync"


def label_errors_find(*, vectors: np.ndarray, item_ids: Sequence[int], labels: Sequence[Any],
                      classes: Sequence[str], multi_label: bool, random_state: int) -> list[Candidate]:
    """The flagged answers among the labelled items, most suspect first, at most ``SIFT_LABEL_ERRORS_MAX_NEW``
    plus those already suspected (the caller's record skips them); empty when the rules above say skip."""
    if multi_label or len(labels) < settings.SIFT_LABEL_ERRORS_MIN_LABELS:
        return []
    answers = [str(label) for label in labels]
    if len(set(answers)) < 2:
        return []
    proba = out_of_fold_proba(np.asarray(vectors, dtype=np.float32), answers, list(classes),
                              n_folds=settings.SIFT_LABEL_ERRORS_FOLDS, random_state=random_state)
    ranking = rank_label_errors(answers, proba, list(classes))
    top = np.argmax(proba, axis=1)
    out = []
    for rank, position in enumerate(ranking.order.tolist()):
        if not ranking.flagged[position]:
            break  # the ranking puts every flagged answer first
        out.append(Candidate(item_id=int(item_ids[position]), given_label=answers[position],
                             suggested_label=str(classes[int(top[position])]),
                             self_confidence=float(ranking.self_confidence[position]), rank=rank))
    return out


def label_errors_record(*, project_id: int, model_version: int, candidates: Sequence[Candidate]) -> int:
    """Record the candidates not suspected before (at most ``SIFT_LABEL_ERRORS_MAX_NEW`` new ones, most suspect
    first), and, once committed, ask the human side to route and settle. Returns how many are new."""
    known = set(SuspectedError.objects.filter(project_id=project_id, item_id__in=[c.item_id for c in candidates])
                .values_list("item_id", flat=True))
    fresh = [c for c in candidates if c.item_id not in known][:settings.SIFT_LABEL_ERRORS_MAX_NEW]
    with transaction.atomic():
        created = SuspectedError.objects.record(project_id=project_id, model_version=model_version,
                                                candidates=fresh)
        if created or SuspectedError.objects.filter(project_id=project_id, state__in=OPEN_STATES).exists():
            transaction.on_commit(lambda: _send_sync(project_id), robust=True)
    return created


def _send_sync(project_id: int) -> None:
    # By name: learning never imports labeling's services or tasks. A broker that is down loses nothing: the
    # suspicions are stored, and the next retrain sends again.
    current_app.send_task(SYNC_TASK, kwargs={"project_id": project_id})


def label_errors_at_retrain(*, project_id: int, model_version: int, vectors: np.ndarray, item_ids: Sequence[int],
                            labels: Sequence[Any], classes: Sequence[str], multi_label: bool,
                            random_state: int) -> dict[str, Any]:
    """Find and record suspicions for one retrain; returns what the model's metrics show of it. Never raises."""
    try:
        last = _last_detection_labels(project_id=project_id, before=model_version)
        if last is not None and len(labels) < last + settings.SIFT_LABEL_ERRORS_EVERY:
            # Too few new labels since the last detection to change its verdicts much: settle, don't re-detect.
            label_errors_record(project_id=project_id, model_version=model_version, candidates=[])
            return {"skipped": f"{len(labels) - last} new label(s) since the last check "
                               f"(checks every {settings.SIFT_LABEL_ERRORS_EVERY})", "labels_at_last": last}
        candidates = label_errors_find(vectors=vectors, item_ids=item_ids, labels=labels, classes=classes,
                                       multi_label=multi_label, random_state=random_state)
        created = label_errors_record(project_id=project_id, model_version=model_version, candidates=candidates)
    except Exception as exc:  # informative work: a failure must not fail the model that is already active
        logger.exception("label-error detection for project %s v%s failed", project_id, model_version)
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"flagged": len(candidates), "new": created}
    if candidates or len(labels) >= settings.SIFT_LABEL_ERRORS_MIN_LABELS:
        out["labels"] = len(labels)  # the detector ran over these: the next one waits for SIFT_LABEL_ERRORS_EVERY more
    return out


def _last_detection_labels(*, project_id: int, before: int) -> int | None:
    """How many labels the newest earlier detection ran over (from the model versions' metrics), or None."""
    recent = (ModelVersion.objects.filter(project_id=project_id, version__lt=before).order_by("-version")
              .values_list("metrics", flat=True)[:50])
    for metrics in recent:
        found = (metrics or {}).get("label_errors") or {}
        if "labels" in found:
            return int(found["labels"])
    return None
