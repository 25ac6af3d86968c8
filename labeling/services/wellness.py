"""Reviewer wellness: blur of severe items, a daily exposure budget, break reminders, and the exposure figures.

The rules, each in one place:

- **Severe.** A label is severe when its severity in the project's current taxonomy is at least the policy's
  ``severe_from``. An item is *known* severe when any answer on it (anyone's) holds a severe label, and
  *predicted* severe when the model's suggestion for the lease is a severe label (held-out suggestions count
  too: the reviewer is protected even when the label is not shown; the page only says "predicted", never which).
- **Blur.** The effective level is the stricter of the project's and the reviewer's (``BLUR_ORDER``): a reviewer's
  preference can only add protection. ``severe`` blurs severe items, ``all`` every item; the page reveals on a
  click or a key press.
- **Exposure.** A reviewer's exposure on a day (UTC) is the number of their answers that day whose own labels or
  the suggestion shown with them were severe. Read from the answers, so it is exact and needs no counter.
- **Budget.** Once the day's exposure reaches ``daily_severe_budget`` (0: no limit), checkout passes over items
  known or predicted severe for that reviewer (``severe_avoider``, used by labeling/services/queues.py) and
  serves other work; items it passed over stay open for everyone else.
- **Break.** The current stretch is the run of the reviewer's answers (in this project) with no gap longer than
  ``BREAK_GAP`` between them, ending no longer than ``BREAK_GAP`` ago. When it has lasted ``break_after_minutes``
  the queue's answer says ``break_due`` and the page shows a reminder (a pause of BREAK_GAP starts a new stretch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labeling.models import (
    BLUR_ORDER,
    Annotation,
    BlurLevel,
    Label,
    Lease,
    Project,
    ReviewerWellness,
    WellnessPolicy,
)
from labeling.services.audit import Actor, audit_record
from labeling.services.errors import ValidationFailed

BREAK_GAP = timedelta(minutes=5)
STRETCH_LOOKBACK = timedelta(hours=12)
EXPOSURE_DAYS = 7


def wellness_policy(project: Project) -> WellnessPolicy:
    """The project's policy, or the defaults (unsaved) when it never set one."""
    policy = WellnessPolicy.objects.filter(project_id=project.pk).first()
    return policy if policy is not None else WellnessPolicy(project_id=project.pk)


def severe_keys(project: Project, policy: WellnessPolicy | None = None) -> frozenset[str]:
    """Keys of the current taxonomy's severe labels."""
    threshold = (policy or wellness_policy(project)).severe_from
    if project.current_taxonomy_version_id is None:
        return frozenset()
    return frozenset(Label.objects.filter(version_id=project.current_taxonomy_version_id, severity__gte=threshold)
                     .values_list("key", flat=True))


def _strictest(*levels: str) -> str:
    return max(levels, key=lambda level: BLUR_ORDER.index(BlurLevel(level)))


def effective_blur(project: Project, reviewer: AbstractBaseUser, policy: WellnessPolicy | None = None) -> str:
    pref = ReviewerWellness.objects.filter(project_id=project.pk, user_id=reviewer.pk).values_list(
        "blur", flat=True).first()
    return _strictest((policy or wellness_policy(project)).blur, pref or BlurLevel.OFF)


def _answer_is_severe(labels: Iterable[str] | None, suggestion: Any, severe: frozenset[str]) -> bool:
    if labels and severe.intersection(labels):
        return True
    return isinstance(suggestion, dict) and suggestion.get("label") in severe


def _known_severe(item_id: int, severe: frozenset[str]) -> bool:
    # The item's few answers, through the unique (item, reviewer) index.
    return any(severe.intersection(labels or []) for labels in
               Annotation.objects.filter(item_id=item_id).values_list("labels", flat=True))


def item_severity(*, item_id: int, suggested_label: str | None, severe: frozenset[str]) -> str | None:
    """"known", "predicted" or None (see the module docstring)."""
    if not severe:
        return None
    if _known_severe(item_id, severe):
        return "known"
    return "predicted" if suggested_label in severe else None


@dataclass(frozen=True)
class DayExposure:
    severe: int
    stretch_seconds: int


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def exposure_today(*, project: Project, reviewer: AbstractBaseUser, severe: frozenset[str],
                   now: datetime | None = None) -> DayExposure:
    """Today's severe answers by this reviewer in this project, and how long their current stretch has lasted."""
    moment = now or timezone.now()
    day_start = _day_start(moment)
    # A stretch may have begun before midnight: read back far enough for it (at most STRETCH_LOOKBACK).
    rows = list(Annotation.objects.filter(project_id=project.pk, reviewer_id=reviewer.pk,
                                          created_at__gte=min(day_start, moment - STRETCH_LOOKBACK))
                .order_by("-created_at").values_list("created_at", "labels", "suggestion_shown"))
    count = sum(_answer_is_severe(labels, shown, severe) for created, labels, shown in rows
                if created >= day_start) if severe else 0
    stretch = 0
    if rows and moment - rows[0][0] <= BREAK_GAP:
        start = rows[0][0]
        for created, *_ in rows[1:]:
            if start - created > BREAK_GAP:
                break
            start = created
        stretch = int((moment - start).total_seconds())
    return DayExposure(severe=count, stretch_seconds=stretch)


def severe_avoider(*, project: Project, reviewer: AbstractBaseUser) -> Callable[[int, str], bool] | None:
    """For checkout: a predicate "pass this candidate over" once the reviewer's budget is spent, else None."""
    policy = wellness_policy(project)
    if policy.daily_severe_budget <= 0:
        return None
    severe = severe_keys(project, policy)
    if not severe or exposure_today(project=project, reviewer=reviewer, severe=severe).severe < \
            policy.daily_severe_budget:
        return None
    return lambda item_id, suggested_label: item_severity(
        item_id=item_id, suggested_label=suggested_label, severe=severe) is not None


def lease_protection(*, project: Project, reviewer: AbstractBaseUser, lease: Lease) -> dict[str, Any]:
    """The ``protection`` block of a queue answer: blur this item?, why, exposure so far and the break reminder."""
    policy = wellness_policy(project)
    severe = severe_keys(project, policy)
    suggested = lease.suggestion.get("label") if isinstance(lease.suggestion, dict) else None
    severity = item_severity(item_id=lease.item_id, suggested_label=suggested, severe=severe)
    blur = effective_blur(project, reviewer, policy)
    day = exposure_today(project=project, reviewer=reviewer, severe=severe)
    break_after = policy.break_after_minutes * 60
    return {
        "blur": blur == BlurLevel.ALL or (blur == BlurLevel.SEVERE and severity is not None),
        "severe": severity,
        "exposure_today": day.severe,
        "daily_severe_budget": policy.daily_severe_budget or None,
        "labelling_minutes": day.stretch_seconds // 60,
        "break_due": bool(break_after) and day.stretch_seconds >= break_after,
    }


def wellness_settings(*, project: Project, reviewer: AbstractBaseUser) -> dict[str, Any]:
    policy = wellness_policy(project)
    pref = ReviewerWellness.objects.filter(project_id=project.pk, user_id=reviewer.pk).values_list(
        "blur", flat=True).first() or BlurLevel.OFF
    day = exposure_today(project=project, reviewer=reviewer, severe=severe_keys(project, policy))
    return {"blur": policy.blur, "severe_from": policy.severe_from,
            "daily_severe_budget": policy.daily_severe_budget, "break_after_minutes": policy.break_after_minutes,
            "my_blur": pref, "effective_blur": _strictest(policy.blur, pref), "my_exposure_today": day.severe}


_POLICY_LIMITS = {"severe_from": (0, 100), "daily_severe_budget": (0, 100_000), "break_after_minutes": (0, 24 * 60)}


def wellness_policy_update(*, actor: Actor, project: Project, **changes: Any) -> WellnessPolicy:
    """Change the project's policy (leads and admins); everything is validated before anything is saved."""
    for name, value in changes.items():
        if name == "blur":
            if value not in BlurLevel.values:
                raise ValidationFailed(f"blur: one of {', '.join(BlurLevel.values)}", field="blur")
        elif name in _POLICY_LIMITS:
            low, high = _POLICY_LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationFailed(f"{name}: a whole number from {low} to {high}", field=name)
        else:
            raise ValidationFailed(f"{name}: not a wellness setting", field=name)
    with transaction.atomic():
        policy, _ = WellnessPolicy.objects.select_for_update().get_or_create(project_id=project.pk)
        before = {name: getattr(policy, name) for name in changes}
        for name, value in changes.items():
            setattr(policy, name, value)
        policy.save()
        audit_record(actor=actor, action="project.wellness_update", obj=project, project=project,
                     data={"before": before, "after": changes})
    return policy


def wellness_preference_set(*, project: Project, reviewer: AbstractBaseUser, blur: str) -> str:
    """Set the reviewer's own blur level. It may only be as strict as the project's or stricter (400 otherwise)."""
    if blur not in BlurLevel.values:
        raise ValidationFailed(f"blur: one of {', '.join(BlurLevel.values)}", field="blur")
    floor = wellness_policy(project).blur
    if BLUR_ORDER.index(BlurLevel(blur)) < BLUR_ORDER.index(BlurLevel(floor)):
        raise ValidationFailed(f"blur: the project blurs at '{floor}'; your setting can only be stricter",
                               field="blur")
    ReviewerWellness.objects.update_or_create(project_id=project.pk, user_id=reviewer.pk, defaults={"blur": blur})
    return blur


def exposure_by_day(*, project: Project, days: int = EXPOSURE_DAYS,
                    now: datetime | None = None) -> list[dict[str, Any]]:
    """Per reviewer per day (UTC), the last ``days`` days: answers and severe answers, for leads' dashboards."""
    moment = now or timezone.now()
    since = _day_start(moment) - timedelta(days=days - 1)
    severe = severe_keys(project)
    answers = (Annotation.objects.filter(project_id=project.pk, created_at__gte=since)
               .values_list("reviewer__username", "created_at", "labels", "suggestion_shown"))
    table: dict[tuple[str, date], list[int]] = {}
    for username, created, labels, shown in answers.iterator(chunk_size=5000):
        cell = table.setdefault((username, created.date()), [0, 0])
        cell[0] += 1
        cell[1] += int(_answer_is_severe(labels, shown, severe))
    policy = wellness_policy(project)
    return [{"reviewer": username, "day": day.isoformat(), "answers": n, "severe": s,
             "over_budget": bool(policy.daily_severe_budget) and s >= policy.daily_severe_budget}
            for (username, day), (n, s) in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0]), reverse=True)]

