"""Per-language insight: progress, model quality, prevalence with its interval, and agreement, language by language.

A project's figures can look healthy while one language is served badly: an English-heavy pool hides a Hindi
minority whose items the model ranks at random. So the stats summary carries a ``by_language`` section that runs
the project's own figures (labeling/selectors/quality.py) over each language's items alone:

- progress: items, finished and labelled per language (one grouped count over the project's non-gold items);
- agreement: Krippendorff's alpha over that language's items with two or more readable answers;
- prevalence: the same sequential Horvitz-Thompson estimator over the language as its own population (a
  domain estimate: the queue's probability samples restricted to the language are probability samples of it);
- model quality: the active model's out-of-fold figures on that language's labels (learning/services/
  evaluation.py computes them at retrain time, for languages with enough labels).

Languages are ``Item.language`` codes (labeling/services/languages.py); items not yet detected are grouped under
``"unknown"`` and undetermined ones under ``"und"``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Q

from labeling.models import Item, Project
from labeling.selectors.answers import _Answers
from labeling.selectors.quality import agreement_figures, prevalence_figures
from learning.scheduling import active_model_language_figures

UNDETECTED_KEY = "unknown"
UNDETERMINED_KEY = "und"


def _key(language: str | None) -> str:
    if language is None:
        return UNDETECTED_KEY
    return language or UNDETERMINED_KEY


def _subset(answers: _Answers, items: set[int]) -> _Answers:
    """The answers on ``items`` only, in the same order (every parallel list filtered alike)."""
    out = _Answers(answers.taxonomy)
    for i, item in enumerate(answers.items):
        if item in items:
            out.ids.append(answers.ids[i])
            out.items.append(item)
            out.reviewers.append(answers.reviewers[i])
            out.labels.append(answers.labels[i])
            out.reasons.append(answers.reasons[i])
            out.model_versions.append(answers.model_versions[i])
            out.inclusion.append(answers.inclusion[i])
            if answers.created:
                out.created.append(answers.created[i])
    out.decided = {item: labels for item, labels in answers.decided.items() if item in items}
    return out


def language_figures(project: Project, *, answers: _Answers) -> dict[str, Any]:
    """``{"languages": [{"language", "progress", "agreement", "prevalence", "model"}, ...], "model_version"}``,
    largest language first."""
    rows = (Item.objects.filter(project=project, is_gold=False).values("language")
            .annotate(items=Count("id"), finished=Count("id", filter=Q(n_done__gte=F("n_required"))),
                      labelled=Count("id", filter=Q(n_done__gt=0))))
    counts = {_key(r["language"]): r for r in rows}
    language_of = {item: _key(language) for item, language in
                   Item.objects.filter(id__in=set(answers.items)).values_list("id", "language")}
    by_language: dict[str, set[int]] = {}
    for item, key in language_of.items():
        by_language.setdefault(key, set()).add(item)
    version, model = active_model_language_figures(project_id=project.pk)
    out = []
    for key, row in sorted(counts.items(), key=lambda kv: (-kv[1]["items"], kv[0])):
        subset = _subset(answers, by_language.get(key, set()))
        agreement = agreement_figures(project, answers=subset)
        prevalence = prevalence_figures(project, answers=subset, population=row["items"])
        out.append({
            "language": key,
            "progress": {"items": row["items"], "finished": row["finished"], "labelled": row["labelled"],
                         "open": row["items"] - row["finished"], "annotations": len(subset.ids)},
            "agreement": {"alpha": agreement["alpha"], "n_units": agreement["n_units"]},
            "prevalence": {"population": prevalence["population"], "n_sample": prevalence["n_sample"],
                           "labels": [{k: entry.get(k) for k in ("key", "name", "estimate", "low", "high", "naive")}
                                      for entry in prevalence["labels"]]},
            "model": model.get(key),
        })
    return {"model_version": version, "languages": out}
