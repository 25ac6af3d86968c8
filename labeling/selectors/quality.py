"""Quality figures for the dashboard and the stats API: database rows in, plain dicts out.

Each public function reads what it needs with a few aggregate or ordered queries (the answers through
labeling/selectors/answers.py), turns the rows into plain Python/numpy inputs and hands them to labeling/stats
(pure functions, tested against hand-computed values and reference implementations). Nothing here writes.

Cost at scale (1M items)
------------------------
No function here scans the pool: item counts come from the maintained ledger (labeling/models/counters.py),
and everything else reads annotations, leases and adjudications, which grow with the number of *labels*.
Agreement, prevalence, reviewer and timeline figures are computed in Python over the project's answers:
0.2-4 s at 50k answers on this box, so the API serves them through the fingerprint-keyed cache at the end of
this module ("The stats cache"), recomputing only after a write that moves them. The one join over the pool,
the ranking's consumption in ``queue_health``, is cached the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, F, Max, Min, Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from labeling.models import (
    Adjudication,
    Annotation,
    ItemCount,
    Lease,
    Project,
    RankingEntry,
    SelectionReason,
)
from labeling.selectors.answers import _Answers, _answers, _decoder, _usernames, _value
from labeling.selectors.progress import progress
from labeling.selectors.propagation import propagation_precision
from labeling.stats import (
    ESTIMATOR_DESCRIPTION,
    SampleRound,
    alpha_from_codes,
    binary_alphas,
    coincidences_from_codes,
    consensus_codes,
    difference_interval,
    naive_prevalence,
    pairwise_kappa,
    sequential_prevalence,
)
from learning.core import vocabulary

# Reasons whose picks are a probability sample of the then-unlabelled pool (learning/core/ranking.py).
SAMPLE_REASONS = frozenset(reason.value for reason in vocabulary.SAMPLE_REASONS)
FALLBACK_REASON = SelectionReason.FALLBACK_RANDOM.value
GOLD_ALERT_WINDOW = 50
"""The alert looks at each reviewer's latest this-many gold answers, so someone who improves stops being flagged."""
MAX_TIMELINE_BUCKETS = 60
ROUND = 4
logger = logging.getLogger(__name__)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), ROUND)


def gold_min_answers() -> int:
    return int(settings.SIFT_GOLD_MIN_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# Agreement.


def _agreement_units(answers: _Answers) -> tuple[list[tuple[int, int, str]], dict[int, list[str]]]:
    """(item, reviewer, value) triples and item -> values, over readable answers."""
    triples: list[tuple[int, int, str]] = []
    units: dict[int, list[str]] = defaultdict(list)
    multi = answers.taxonomy.multi_label
    for item, reviewer, labels in zip(answers.items, answers.reviewers, answers.labels, strict=True):
        if labels is None:
            continue
        value = _value(labels, multi)
        triples.append((item, reviewer, value))
        units[item].append(value)
    return triples, units


@dataclass
class _Codes:
    """Readable answers as arrays: item, value code, and which labels (rolled up) each answer used."""

    items: np.ndarray
    reviewers: np.ndarray
    values: np.ndarray
    domain: list[str]
    present: np.ndarray


def _codes(answers: _Answers, *, domain: Sequence[str] = ()) -> _Codes:
    taxonomy = answers.taxonomy
    multi = taxonomy.multi_label
    column = {key: j for j, key in enumerate(taxonomy.keys)}
    position = {value: i for i, value in enumerate(domain)}
    ordered = list(domain)
    items: list[int] = []
    reviewers: list[int] = []
    codes: list[int] = []
    rows_of: dict[tuple[str, ...], np.ndarray] = {}
    present_rows: list[np.ndarray] = []
    for item, reviewer, labels in zip(answers.items, answers.reviewers, answers.labels, strict=True):
        if labels is None:
            continue
        value = _value(labels, multi)
        code = position.get(value)
        if code is None:
            code = position[value] = len(ordered)
            ordered.append(value)
        items.append(item)
        reviewers.append(reviewer)
        codes.append(code)
        row = rows_of.get(labels)
        if row is None:
            row = np.zeros(len(column), dtype=bool)
            row[[column[k] for k in taxonomy.rollup(labels) if k in column]] = True
            rows_of[labels] = row
        present_rows.append(row)
    present = np.vstack(present_rows) if present_rows else np.zeros((0, len(column)), dtype=bool)
    return _Codes(np.asarray(items, dtype=np.int64), np.asarray(reviewers, dtype=np.int64),
                  np.asarray(codes, dtype=np.int64), ordered, present)


def agreement_figures(project: Project, *, answers: _Answers | None = None) -> dict[str, Any]:
    """Krippendorff's alpha (project and per label), Cohen's kappa per reviewer pair, and label confusion."""
    answers = answers or _answers(project)
    taxonomy = answers.taxonomy
    # Single-label: every leaf is in the confusion matrix, in taxonomy order, even ones nobody used yet.
    codes = _codes(answers, domain=[] if taxonomy.multi_label else taxonomy.leaves)
    overall = alpha_from_codes(codes.items, codes.values, len(codes.domain))
    per_label = [
        # Binary "did this reviewer use the label (or a child of it)": alpha for that one decision.
        {"key": key, "name": taxonomy.names.get(key, key), "alpha": _r(result.alpha), "n_units": result.n_units}
        for key, result in zip(taxonomy.keys, binary_alphas(codes.items, codes.present), strict=True)
    ]
    triples, _units = _agreement_units(answers)
    names: dict[Any, str] = dict(_usernames(answers.reviewers))
    kappas = [
        {"reviewer_a": names.get(a, str(a)), "reviewer_b": names.get(b, str(b)),
         "kappa": _r(result.kappa), "n_items": result.n, "observed": _r(result.observed)}
        for a, b, result in pairwise_kappa(triples, min_items=1)
    ]
    matrix = coincidences_from_codes(codes.items, codes.values, len(codes.domain))
    return {
        "alpha": _r(overall.alpha), "n_units": overall.n_units, "n_values": overall.n_values,
        "method": "Krippendorff's alpha, nominal, over items with two or more readable answers",
        "per_label": per_label,
        "kappa": kappas,
        "confusion": {"labels": codes.domain, "matrix": [[_r(x) for x in row] for row in matrix],
                      "definition": "Krippendorff coincidences: how often one reviewer gave the row value where "
                                    "another gave the column value on the same item (symmetric)"},
    }


# ---------------------------------------------------------------------------------------------------------------
# Prevalence.


@dataclass
class _ItemFacts:
    first_id: int
    first_reason: str
    first_model_version: int | None
    first_inclusion: float | None
    votes: Counter[str] = field(default_factory=Counter)
    n_readable: int = 0


def _item_facts(answers: _Answers) -> dict[int, _ItemFacts]:
    facts: dict[int, _ItemFacts] = {}
    taxonomy = answers.taxonomy
    for ann_id, item, labels, reason, model_version, inclusion in zip(
            answers.ids, answers.items, answers.labels, answers.reasons, answers.model_versions, answers.inclusion,
            strict=True):
        fact = facts.get(item)
        if fact is None:
            fact = facts[item] = _ItemFacts(ann_id, reason, model_version, inclusion)
        if labels is not None:
            fact.n_readable += 1
            fact.votes.update(taxonomy.rollup(labels))
    return facts


def _rounds(answers: _Answers, facts: dict[int, _ItemFacts]) -> list[tuple[Any, int, list[int], float | None]]:
    """The probability samples: (key, boundary annotation id, sampled items, recorded inclusion probability).

    A ranking's boundary is the first annotation made under it; its frame is every pool item nobody had
    answered before that (see labeling/stats/prevalence.py). Picks from the random fallback order form one
    sample per uninterrupted run (each run is a random sample of what was open when it began).
    """
    boundary: dict[int, int] = {}
    for ann_id, model_version in zip(answers.ids, answers.model_versions, strict=True):
        if model_version is not None and model_version not in boundary:
            boundary[model_version] = ann_id
    ranked: dict[int, list[int]] = defaultdict(list)
    inclusion: dict[int, float | None] = {}
    runs: list[tuple[int, list[int]]] = []
    previous_fallback = False
    for item, fact in sorted(facts.items(), key=lambda pair: pair[1].first_id):
        if fact.first_reason in SAMPLE_REASONS and fact.first_model_version is not None:
            ranked[fact.first_model_version].append(item)
            inclusion.setdefault(fact.first_model_version, fact.first_inclusion)
            previous_fallback = False
        elif fact.first_reason == FALLBACK_REASON:
            if not previous_fallback:
                runs.append((fact.first_id, []))
            runs[-1][1].append(item)
            previous_fallback = True
        else:
            previous_fallback = False
    out: list[tuple[Any, int, list[int], float | None]] = [
        (f"ranking {version}", boundary[version], items, inclusion.get(version))
        for version, items in sorted(ranked.items())
    ]
    out += [(f"random order from answer {start}", start, items, None) for start, items in runs]
    return sorted(out, key=lambda r: r[1])


def prevalence_figures(project: Project, *, answers: _Answers | None = None, population: int | None = None,
                       confidence: float = 0.95) -> dict[str, Any]:
    """Per label: the pool's prevalence with its interval, beside the naive share among labelled items.

    ``population`` (non-gold items) saves the count when the caller already has it from ``progress``.
    """
    answers = answers or _answers(project)
    taxonomy = answers.taxonomy
    if population is None:
        population = ItemCount.objects.counts([project.pk])[project.pk].pool
    facts = _item_facts(answers)
    # An item whose answers cannot be read in the current version has no known y: leave it out of the
    # population altogether (equivalent to assuming such items are like the rest), and say how many.
    unreadable = [item for item, fact in facts.items() if fact.n_readable == 0 and item not in answers.decided]
    for item in unreadable:
        del facts[item]
    population -= len(unreadable)
    keys = taxonomy.keys
    order = sorted(facts, key=lambda item: facts[item].first_id)
    first_ids = np.array([facts[item].first_id for item in order], dtype=np.int64)
    y = np.zeros((len(order), len(keys)), dtype=np.float64)
    column = {key: j for j, key in enumerate(keys)}
    row_of = {}
    for i, item in enumerate(order):
        row_of[item] = i
        fact = facts[item]
        if item in answers.decided:
            for key in taxonomy.rollup(answers.decided[item]):
                if key in column:
                    y[i, column[key]] = 1.0
        else:
            for key, votes in fact.votes.items():
                if key in column:
                    y[i, column[key]] = votes / fact.n_readable
    known = np.vstack([np.zeros((1, len(keys))), np.cumsum(y, axis=0)])  # known[k] = sum of the first k rows
    rounds = _rounds(answers, facts)
    out: dict[str, Any] = {
        "estimator": ESTIMATOR_DESCRIPTION, "confidence": confidence, "population": population,
        "labelled": len(order), "unreadable": len(unreadable),
        "n_sample": sum(len(items) for _k, _b, items, _p in rounds), "n_rounds": len(rounds), "labels": [],
    }
    census = population > 0 and len(order) >= population
    for j, key in enumerate(keys):
        entry: dict[str, Any] = {"key": key, "name": taxonomy.names.get(key, key),
                                 "naive": _r(naive_prevalence(list(y[:, j])))}
        if population <= 0:
            entry.update(estimate=None, low=None, high=None, n_sample=0, sample_positives=0.0)
        elif census:
            exact = float(y[:, j].sum()) / population
            entry.update(estimate=_r(exact), low=_r(exact), high=_r(exact), n_sample=len(order),
                         sample_positives=_r(float(y[:, j].sum())), method="census")
        else:
            sample_rounds = []
            for round_key, start, items, inclusion in rounds:
                before = int(np.searchsorted(first_ids, start, side="left"))
                sample_rounds.append(SampleRound(
                    frame_size=population - before, known_total=float(known[before, j]),
                    sample=[float(y[row_of[item], j]) for item in items], inclusion_probability=inclusion,
                    key=round_key))
            estimate = sequential_prevalence(population_size=population, rounds=sample_rounds,
                                             confidence=confidence)
            entry.update(estimate=_r(estimate.estimate), low=_r(estimate.low), high=_r(estimate.high),
                         n_sample=estimate.n_sample, sample_positives=_r(estimate.sample_positives),
                         census_part=_r(estimate.census_part), method="sequential_ht")
        out["labels"].append(entry)
    if census:
        out["estimator"] = "Census: every item in the pool is labelled, so the shares are exact."
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reviewers: throughput, time, skips, gold, consensus, suggestions; and the gold alert.


def _gold_expected(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def gold_figures(project: Project) -> dict[int, dict[str, Any]]:
    """Per reviewer: gold answers, accuracy overall, over the latest window, and per expected label."""
    rows = (Annotation.objects.filter(project=project, gold_correct__isnull=False).order_by("id")
            .values_list("reviewer_id", "gold_correct", "item__gold_labels"))
    per: dict[int, dict[str, Any]] = {}
    for reviewer, correct, expected in rows:
        entry = per.setdefault(reviewer, {"n": 0, "correct": 0, "history": [], "labels": defaultdict(lambda: [0, 0])})
        entry["n"] += 1
        hit = 1 if correct else 0
        entry["correct"] += hit
        entry["history"].append(bool(correct))
        for key in _gold_expected(expected):
            entry["labels"][key][0] += hit
            entry["labels"][key][1] += 1
    out: dict[int, dict[str, Any]] = {}
    for reviewer, entry in per.items():
        recent = entry["history"][-GOLD_ALERT_WINDOW:]
        out[reviewer] = {
            "n_gold": entry["n"], "gold_correct": entry["correct"],
            "gold_accuracy": _r(entry["correct"] / entry["n"]),
            "gold_recent_n": len(recent), "gold_recent_accuracy": _r(sum(recent) / len(recent)),
            "gold_by_label": {key: {"n": n, "correct": c, "accuracy": _r(c / n)}
                              for key, (c, n) in sorted(entry["labels"].items())},
        }
    return out


def gold_alerts(project: Project, *, gold: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Reviewers whose accuracy on their latest gold answers is below the project's threshold.

    Only once they have at least ``SIFT_GOLD_MIN_ANSWERS`` (default 5) gold answers: two misses out of three
    is noise, not a finding. Worst first.
    """
    gold = gold if gold is not None else gold_figures(project)
    minimum = gold_min_answers()
    threshold = project.gold_accuracy_threshold
    names = _usernames(gold)
    alerts = []
    for reviewer, entry in gold.items():
        if entry["gold_recent_n"] < minimum or entry["gold_recent_accuracy"] >= threshold:
            continue
        weakest = sorted(entry["gold_by_label"].items(), key=lambda kv: (kv[1]["accuracy"], -kv[1]["n"]))[:3]
        alerts.append({
            "reviewer": names.get(reviewer, str(reviewer)), "reviewer_id": reviewer,
            "accuracy": entry["gold_recent_accuracy"], "n_gold": entry["gold_recent_n"], "threshold": threshold,
            "weakest_labels": [{"key": key, **figures} for key, figures in weakest],
            "message": (f"{names.get(reviewer, reviewer)} answered {entry['gold_recent_accuracy']:.0%} of their "
                        f"latest {entry['gold_recent_n']} gold items correctly (threshold {threshold:.0%})"),
        })
    return sorted(alerts, key=lambda a: (a["accuracy"], a["reviewer"]))


def _suggestion_rows(project: Project) -> list[tuple[int, Any, str | None, bool, int, int | None]]:
    """(reviewer, labels as JSON text, suggested label, hidden, item, model_version) for non-gold answers whose
    lease had a suggestion (shown or withheld). The label is read out of the JSON in SQL: no per-row decode."""
    rows = (Annotation.objects.filter(project=project, item__is_gold=False, lease__isnull=False)
            .filter(Q(lease__suggestion__isnull=False) | Q(lease__suggestion_hidden=True))
            .annotate(labels_text=Cast("labels", TextField()), suggested=KeyTextTransform("label", "lease__suggestion"))
            .values_list("reviewer_id", "labels_text", "suggested", "lease__suggestion_hidden", "item_id",
                         "model_version"))
    return list(rows)


def _hidden_suggestions(project: Project, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The suggestion a hidden lease would have shown, from the ranking it came from (while not pruned)."""
    out: dict[tuple[int, int], str] = {}
    versions = {version for version, _item in wanted}
    for version in versions:
        items = [item for v, item in wanted if v == version]
        for item, label in (RankingEntry.objects.filter(project_id=project.pk, ranking_version=version,
                                                         item_id__in=items)
                            .exclude(suggested_label="").values_list("item_id", "suggested_label")):
            out[(version, item)] = label
    return out


def suggestion_figures(project: Project) -> dict[Any, dict[str, Any]]:
    """Per reviewer (and under key None for everyone): how often the answer matched the model's suggestion
    when it was shown, and when it was withheld by the random hold-out; the difference is automation bias."""
    rows = _suggestion_rows(project)
    missing = {(version, item) for _r, _l, label, hidden, item, version in rows
               if hidden and not label and version is not None}
    recovered = _hidden_suggestions(project, missing) if missing else {}
    decode = _decoder()
    tally: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # shown, followed, hidden, matched
    for reviewer, labels_text, suggested, hidden, item, version in rows:
        label = suggested
        if hidden and not label:
            label = recovered.get((version, item)) if version is not None else None
        if not label:
            continue
        match = int(label in (decode(labels_text) or ()))
        for key in (reviewer, None):
            if hidden:
                tally[key][2] += 1
                tally[key][3] += match
            else:
                tally[key][0] += 1
                tally[key][1] += match
    out: dict[Any, dict[str, Any]] = {}
    for key, (shown, followed, hidden_n, matched) in tally.items():
        entry: dict[str, Any] = {
            "shown": shown, "followed": followed, "follow_rate": _r(followed / shown) if shown else None,
            "hidden": hidden_n, "hidden_matched": matched,
            "hidden_match_rate": _r(matched / hidden_n) if hidden_n else None,
            "automation_bias": None, "automation_bias_low": None, "automation_bias_high": None,
        }
        if shown and hidden_n:
            d, low, high = difference_interval(followed, shown, matched, hidden_n)
            entry.update(automation_bias=_r(d), automation_bias_low=_r(low), automation_bias_high=_r(high))
        out[key] = entry
    return out


def reviewer_figures(project: Project, *, answers: _Answers | None = None,
                     now: datetime | None = None) -> dict[str, Any]:
    """One row per reviewer with answers or leases in the project, plus the gold alerts and project totals."""
    answers = answers or _answers(project)
    now = now or timezone.now()
    week_ago = now - timedelta(days=7)
    per_reviewer = (Annotation.objects.filter(project=project).values("reviewer_id").annotate(
        n=Count("id"), last_7_days=Count("id", filter=Q(created_at__gte=week_ago)),
        first=Min("created_at"), last=Max("created_at")))
    counts = {row["reviewer_id"]: row for row in per_reviewer}
    times: dict[int, list[int]] = defaultdict(list)
    for reviewer, ms in (Annotation.objects.filter(project=project, lead_time_ms__isnull=False)
                         .values_list("reviewer_id", "lead_time_ms").iterator(chunk_size=10000)):
        times[reviewer].append(int(ms or 0))
    leases: dict[int, Counter[str]] = defaultdict(Counter)
    for entry in Lease.objects.filter(project=project).values("reviewer_id", "state").annotate(n=Count("id")):
        leases[entry["reviewer_id"]][entry["state"]] = entry["n"]
    codes = _codes(answers)
    consensus = consensus_codes(codes.items, codes.reviewers, codes.values, max(1, len(codes.domain)))
    gold = gold_figures(project)
    suggestions = suggestion_figures(project)
    reviewers = set(counts) | set(leases)
    names = _usernames(reviewers)
    alerts = gold_alerts(project, gold=gold)
    flagged = {a["reviewer_id"] for a in alerts}
    rows = []
    for reviewer in sorted(reviewers, key=lambda r: names.get(r, "")):
        c = counts.get(reviewer, {"n": 0, "last_7_days": 0})
        lease = leases.get(reviewer, Counter())
        decided = lease["submitted"] + lease["skipped"]
        spent = times.get(reviewer, [])
        agreed, compared = consensus.get(reviewer, (0, 0))
        row: dict[str, Any] = {
            "reviewer": names.get(reviewer, str(reviewer)),
            "annotations": c["n"], "last_7_days": c["last_7_days"],
            "median_seconds": _r(statistics.median(spent) / 1000.0) if spent else None,
            "items_per_hour": _r(3_600_000.0 * len(spent) / sum(spent)) if spent and sum(spent) > 0 else None,
            "skipped": lease["skipped"],
            "skip_rate": _r(lease["skipped"] / decided) if decided else None,
            "consensus_agreement": _r(agreed / compared) if compared else None, "consensus_compared": compared,
            "n_gold": 0, "gold_accuracy": None, "gold_by_label": {},
            "flagged": reviewer in flagged,
        }
        if reviewer in gold:
            g = gold[reviewer]
            row.update(n_gold=g["n_gold"], gold_accuracy=g["gold_accuracy"], gold_by_label=g["gold_by_label"],
                       gold_recent_accuracy=g["gold_recent_accuracy"])
        s = suggestions.get(reviewer)
        row["suggestions"] = s
        rows.append(row)
    for alert in alerts:
        alert.pop("reviewer_id", None)
    return {
        "reviewers": rows, "alerts": alerts,
        "gold_threshold": project.gold_accuracy_threshold, "gold_min_answers": gold_min_answers(),
        "suggestions": suggestions.get(None),
        "definitions": {
            "items_per_hour": "answers per hour of recorded labelling time (lead_time_ms)",
            "skip_rate": "skipped leases / (submitted + skipped leases)",
            "consensus_agreement": "share of answers equal to the majority of the other reviewers of the item "
                                   "(items where the others tie are not compared)",
            "automation_bias": "follow rate with the suggestion shown minus match rate with it withheld "
                               "(random hold-out), with a 95% Newcombe interval",
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Queue health.


def _ranking_figures(project: Project) -> dict[str, Any]:
    """How much of the active ranking is consumed: a join of the ranking (one row per pool item) with the items,
    so most of a second at 1M; queue_health reads it through the cache."""
    version = project.active_ranking_version
    ranking: dict[str, Any] = {"version": version, "entries": 0, "open_entries": 0, "consumed_share": None,
                               "labels_since_served": None}
    if version is not None:
        entries = RankingEntry.objects.filter(project_id=project.pk, ranking_version=version)
        figures = entries.aggregate(n=Count("id"), open=Count("id", filter=Q(item__n_done__lt=F("item__n_required"))))
        ranking.update(entries=figures["n"], open_entries=figures["open"],
                       consumed_share=_r(1 - figures["open"] / figures["n"]) if figures["n"] else None)
        first_served = Lease.objects.filter(project=project, model_version=version).aggregate(t=Min("created_at"))["t"]
        if first_served is not None:
            ranking["labels_since_served"] = Annotation.objects.filter(project=project,
                                                                       created_at__gte=first_served).count()
    return ranking


def queue_health(project: Project, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    counts = progress(project)
    leases = Lease.objects.filter(project=project, state=Lease.State.ACTIVE).aggregate(
        holding=Count("id", filter=Q(expires_at__gt=now)), expired=Count("id", filter=Q(expires_at__lte=now)),
        oldest=Min("created_at", filter=Q(expires_at__gt=now)))
    # Keyed by what moves its figures (finished items, answers; the version is in every key): exact, and
    # recomputed only after a write.
    ranking = _cached(project, "ranking", lambda: _ranking_figures(project),
                      extra=[counts["finished"], counts["annotations"]], seconds=RANKING_CACHE_SECONDS)
    recent = Annotation.objects.filter(project=project).aggregate(
        last_hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))),
        last_day=Count("id", filter=Q(created_at__gte=now - timedelta(days=1))), newest=Max("created_at"))
    adjudications = dict(Adjudication.objects.filter(project=project).values_list("state").annotate(n=Count("id")))
    return {
        **counts,
        "leases_out": leases["holding"], "leases_expired_unclosed": leases["expired"],
        "oldest_lease_seconds": _r((now - leases["oldest"]).total_seconds()) if leases["oldest"] else None,
        "ranking": ranking,
        "answers_last_hour": recent["last_hour"], "answers_last_day": recent["last_day"],
        "seconds_since_last_answer": _r((now - recent["newest"]).total_seconds()) if recent["newest"] else None,
        "adjudications_pending": adjudications.get(Adjudication.State.PENDING, 0),
        "adjudications_decided": adjudications.get(Adjudication.State.DECIDED, 0),
    }


# ---------------------------------------------------------------------------------------------------------------
# Timeline: agreement over time and label distribution.


def _bucket_start(day: date, weekly: bool) -> date:
    return day - timedelta(days=day.weekday()) if weekly else day


def timeline(project: Project, *, answers: _Answers | None = None) -> dict[str, Any]:
    """Per day (per week when the project spans more than 60 days): answers, per-label counts, and alpha over
    the items completed in the bucket and over all items completed so far (overall and per label)."""
    answers = answers if answers is not None and answers.created else _answers(project, with_times=True)
    taxonomy = answers.taxonomy
    if not answers.ids:
        return {"bucket": "day", "buckets": [], "labels": taxonomy.leaves, "label_names": {}, "distribution": []}
    first, last = min(answers.created).date(), max(answers.created).date()
    weekly = (last - first).days > MAX_TIMELINE_BUCKETS
    per_bucket: dict[date, Counter[str]] = defaultdict(Counter)
    answers_per_bucket: Counter[date] = Counter()
    item_last: dict[int, date] = {}
    for item, labels, created in zip(answers.items, answers.labels, answers.created, strict=True):
        bucket = _bucket_start(created.date(), weekly)
        answers_per_bucket[bucket] += 1
        item_last[item] = bucket
        if labels is not None:
            per_bucket[bucket].update(labels)
    buckets = sorted(answers_per_bucket)[-MAX_TIMELINE_BUCKETS:]
    codes = _codes(answers)
    # Each answer's item completion bucket (its last answer's), as an ordinal, so each bucket is a mask.
    completed = np.array([item_last[item].toordinal() for item in codes.items.tolist()], dtype=np.int64)
    rows = []
    for bucket in buckets:
        day = bucket.toordinal()
        alpha = alpha_from_codes(codes.items[completed == day], codes.values[completed == day], len(codes.domain))
        so_far = completed <= day
        running = alpha_from_codes(codes.items[so_far], codes.values[so_far], len(codes.domain))
        by_label = binary_alphas(codes.items[so_far], codes.present[so_far])
        rows.append({"start": bucket.isoformat(), "answers": answers_per_bucket[bucket],
                     "alpha": _r(alpha.alpha), "alpha_units": alpha.n_units,
                     "alpha_cumulative": _r(running.alpha), "alpha_cumulative_units": running.n_units,
                     "alpha_by_label_cumulative": {key: _r(result.alpha)
                                                   for key, result in zip(taxonomy.keys, by_label, strict=True)},
                     "labels": {key: per_bucket[bucket].get(key, 0) for key in taxonomy.leaves}})
    multi = taxonomy.multi_label
    distribution = Counter[str]()
    for item, entries in answers.by_item().items():
        if item in answers.decided:
            distribution.update(answers.decided[item])
            continue
        votes = Counter(label for _r, labels in entries for label in labels)
        top = votes.most_common(2)
        if len(top) > 1 and top[0][1] == top[1][1] and not multi:
            distribution["(tie)"] += 1
        elif multi:
            distribution.update(k for k, v in votes.items() if v * 2 > len(entries))
        else:
            distribution[top[0][0]] += 1
    return {
        "bucket": "week" if weekly else "day", "buckets": rows, "labels": taxonomy.leaves,
        "label_names": {key: taxonomy.names.get(key, key) for key in taxonomy.leaves},
        "distribution": [{"key": key, "name": taxonomy.names.get(key, key), "items": distribution.get(key, 0)}
                         for key in [*taxonomy.leaves, "(tie)"] if key != "(tie)" or distribution.get(key)],
    }


# ---------------------------------------------------------------------------------------------------------------
# The summary (CONTRACT.md: GET /api/projects/{slug}/stats/).


def stats_summary(project: Project) -> dict[str, Any]:
    """Progress, agreement and prevalence in one response (one read of the answers for both), and the same
    figures per language (labeling/selectors/languages.py)."""
    # Imported here: that module builds on this one's figures.
    from labeling.selectors.languages import language_figures

    answers = _answers(project)
    counts = progress(project)
    agreement = agreement_figures(project, answers=answers)
    prevalence = prevalence_figures(project, answers=answers, population=counts["items"])
    adjudications = dict(Adjudication.objects.filter(project=project).values_list("state").annotate(n=Count("id")))
    return {
        "project": project.slug,
        "progress": counts,
        "agreement": {"alpha": agreement["alpha"], "n_units": agreement["n_units"],
                      "per_label": agreement["per_label"]},
        "prevalence": prevalence,
        "adjudications": {"pending": adjudications.get(Adjudication.State.PENDING, 0),
                          "decided": adjudications.get(Adjudication.State.DECIDED, 0)},
        "alerts": gold_alerts(project),
        "propagation": propagation_precision(project=project),
        "by_language": language_figures(project, answers=answers),
    }


# ---------------------------------------------------------------------------------------------------------------
# The stats cache: what the API views serve.
#
# At 1M items and 50k answers each figure costs 0.5-4 s of Python over the answers (see "Cost at scale" above),
# so the API serves them from the cache (Redis, JSON: config/settings.py), keyed by a fingerprint of everything
# the figures read that can change: the answers (count, newest id), the adjudications (count, decided, newest
# id and decision), the item ledger's counts, the project's taxonomy version, active ranking and gold
# threshold, and the gold minimum. A write that changes a figure changes the fingerprint, so the next read
# recomputes: correct invalidation, no stale figure after a submit, an undo, a decision or an import. What the
# fingerprint does not see: time passing (the "last 7 days" counts; at most ``STATS_CACHE_SECONDS`` old) and
# leases. Leases are left out on purpose: every checkout writes one, so keying on them would recompute every
# figure after every next-item, which is what a busy queue does all day (measured: p95 x5 at 100k). The one
# figure that reads them, the reviewers' skip counts, is cached for ``REVIEWER_CACHE_SECONDS`` only, and a
# skip shows at once when the reviewer's next answer lands. The fingerprint itself is a few index scans
# (milliseconds). The project's creation time is in the key, so a recreated database (tests, a restored dump)
# never meets another project's entry under a reused id.

STATS_CACHE_SECONDS = 300
REVIEWER_CACHE_SECONDS = 60
RANKING_CACHE_SECONDS = STATS_CACHE_SECONDS
_CACHE_PREFIX = "sift:stats:v1"


def _fingerprint(project: Project) -> list[Any]:
    answers = Annotation.objects.filter(project=project).aggregate(n=Count("id"), top=Max("id"))
    adjudications = Adjudication.objects.filter(project=project).aggregate(
        n=Count("id"), top=Max("id"), decided=Count("id", filter=Q(state=Adjudication.State.DECIDED)),
        last=Max("decided_at"))
    items = ItemCount.objects.counts([project.pk])[project.pk]
    return [project.current_taxonomy_version_id, project.active_ranking_version, project.gold_accuracy_threshold,
            gold_min_answers(), answers, adjudications, items.__dict__]


def _plain(data: Any) -> Any:
    """What the cache stores and what every caller gets back, hit or miss: JSON types only (datetimes as the
    ISO strings the API renders anyway), so a cached answer and a fresh one are the same bytes."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _cached(project: Project, name: str, compute: Callable[[], Any], *, extra: Sequence[Any] | None = None,
            seconds: int = STATS_CACHE_SECONDS) -> Any:
    fingerprint = list(extra) if extra is not None else _fingerprint(project)
    digest = hashlib.sha256(json.dumps([project.created_at, project.active_ranking_version, fingerprint],
                                       cls=DjangoJSONEncoder).encode()).hexdigest()[:32]
    key = f"{_CACHE_PREFIX}:{project.pk}:{name}:{digest}"
    try:
        found = cache.get(key)
    except Exception:  # Redis down: figures are still served, only slower
        logger.warning("stats cache unavailable; computing %s for project %s", name, project.pk, exc_info=True)
        return _plain(compute())
    if found is not None:
        return found
    data = _plain(compute())
    try:
        cache.set(key, data, seconds)
    except Exception:
        logger.warning("stats cache unavailable; not storing %s", name, exc_info=True)
    return data


CACHED_FIGURES: dict[str, Callable[[Project], Any]] = {
    "summary": lambda project: stats_summary(project),
    "agreement": lambda project: agreement_figures(project),
    "reviewers": lambda project: reviewer_figures(project),
    "prevalence": lambda project: prevalence_figures(project),
    "timeline": lambda project: timeline(project),
}


def cached_figures(project: Project, name: str) -> Any:
    """The figure ``name`` (a key of ``CACHED_FIGURES``) as the API serves it: from the cache while the
    fingerprint holds. ``queue_health`` is not in here: it is cheap but for its ranking part, cached on its own."""
    seconds = REVIEWER_CACHE_SECONDS if name == "reviewers" else STATS_CACHE_SECONDS
    return _cached(project, name, lambda: CACHED_FIGURES[name](project), seconds=seconds)
