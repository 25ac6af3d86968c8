"""The answers quality figures read, once per request: the project's taxonomy and its reviewers' answers.

Which answers count
-------------------
An annotation is read in the project's *current* taxonomy version: its labels if it was given in that
version, else its ``mapped_labels`` if a label migration mapped it onto that version, else it is unreadable
and left out (the exports' rule). Parents are rolled up: an answer "spam/phishing" also counts for "spam".
An item's final answer is the lead's decided adjudication where there is one, else its reviewers' answers.
Gold items are left out of agreement, prevalence and the suggestion figures (everyone answers them, and
their cover suggestion belongs to another item: labeling/services/gold.py); they feed gold accuracy only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import TextField
from django.db.models.functions import Cast

from labeling.models import (
    Adjudication,
    Annotation,
    AnswerSource,
    Label,
    Project,
    TaxonomyVersion,
)
from labeling.models.annotations import answer_read_in

# ---------------------------------------------------------------------------------------------------------------
# The taxonomy and the answers, read once per request.


@dataclass
class _Taxonomy:
    version_id: int | None
    multi_label: bool
    keys: list[str]
    names: dict[str, str]
    ancestors: dict[str, tuple[str, ...]]
    leaves: list[str]

    def rollup(self, labels: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for key in labels:
            out.add(key)
            out.update(self.ancestors.get(key, ()))
        return out


def _taxonomy(version: TaxonomyVersion | None) -> _Taxonomy:
    if version is None:
        return _Taxonomy(None, False, [], {}, {}, [])
    rows = list(Label.objects.filter(version=version).order_by("position", "id")
                .values_list("id", "key", "name", "parent_id"))
    key_of: dict[int, str] = {label_id: key for label_id, key, _name, _parent in rows}
    parent_of: dict[str, str | None] = {
        key: key_of.get(parent_id) if parent_id else None for _id, key, _name, parent_id in rows}
    children: dict[str | None, list[str]] = defaultdict(list)
    for key, parent_key in parent_of.items():
        children[parent_key].append(key)
    ordered: list[str] = []
    stack = list(reversed(children[None]))
    while stack:  # depth-first, parents before children, in the taxonomy's own order
        key = stack.pop()
        ordered.append(key)
        stack.extend(reversed(children.get(key, [])))
    ancestors: dict[str, tuple[str, ...]] = {}
    for key in ordered:
        chain: list[str] = []
        up = parent_of.get(key)
        while up is not None:
            chain.append(up)
            up = parent_of.get(up)
        ancestors[key] = tuple(chain)
    return _Taxonomy(version.pk, version.multi_label, ordered, {key: name for _i, key, name, _p in rows}, ancestors,
                     [key for key in ordered if not children.get(key)])


def _value(labels: tuple[str, ...], multi_label: bool) -> str:
    """One nominal value per answer: the key, or for multi-label answers the sorted set joined by '+'."""
    return "+".join(sorted(labels)) if multi_label else (labels[0] if labels else "")


@dataclass
class _Answers:
    """The project's non-gold human annotations read in the current version, ordered by id."""

    taxonomy: _Taxonomy
    ids: list[int] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    reviewers: list[int] = field(default_factory=list)
    labels: list[tuple[str, ...] | None] = field(default_factory=list)
    created: list[datetime] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    model_versions: list[int | None] = field(default_factory=list)
    inclusion: list[float | None] = field(default_factory=list)
    decided: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def by_item(self) -> dict[int, list[tuple[int, tuple[str, ...]]]]:
        """item -> [(reviewer, readable labels)], in annotation order."""
        out: dict[int, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
        for item, reviewer, labels in zip(self.items, self.reviewers, self.labels, strict=True):
            if labels is not None:
                out[item].append((reviewer, labels))
        return out


def _decoder() -> Any:
    """JSON label lists arrive as text and take a handful of distinct values: decode each distinct one once."""
    cache: dict[str | None, tuple[str, ...] | None] = {None: None}

    def decode(raw: str | None) -> tuple[str, ...] | None:
        found = cache.get(raw, ())
        if found == ():
            value = json.loads(raw) if raw is not None else None
            found = cache[raw] = tuple(value) if isinstance(value, list) else None
        return found

    return decode


def _answers(project: Project, *, taxonomy: _Taxonomy | None = None, with_times: bool = False) -> _Answers:
    """One ordered read of the project's non-gold answers. Labels are read as text (no per-row JSON field
    conversion) and ``created_at`` only when a figure needs it: the read is most of a stats request's time."""
    taxonomy = taxonomy or _taxonomy(project.current_taxonomy_version)
    out = _Answers(taxonomy)
    current = taxonomy.version_id
    decode = _decoder()
    fields = ["id", "item_id", "reviewer_id", "labels_text", "taxonomy_version_id", "mapped_text",
              "mapped_taxonomy_version_id", "selection_reason", "model_version", "inclusion_probability"]
    if with_times:
        fields.append("created_at")
    # Human answers only: the quality figures are about reviewers' judgements. Propagated answers have their own
    # figure (labeling/selectors/propagation.py); counted in the progress ledger, they are not a second rater.
    rows = (Annotation.objects.filter(project=project, item__is_gold=False, source=AnswerSource.HUMAN).order_by("id")
            .annotate(labels_text=Cast("labels", TextField()), mapped_text=Cast("mapped_labels", TextField()))
            .values_list(*fields).iterator(chunk_size=10000))
    for row in rows:
        out.ids.append(row[0])
        out.items.append(row[1])
        out.reviewers.append(row[2])
        _source, text = answer_read_in(current, given_version_id=row[4], labels=row[3],
                                       mapped_version_id=row[6], mapped_labels=row[5])
        out.labels.append(None if text is None else decode(text))
        out.reasons.append(row[7])
        out.model_versions.append(row[8])
        out.inclusion.append(row[9])
        if with_times:
            out.created.append(row[10])
    decided = (Adjudication.objects.filter(project=project, state=Adjudication.State.DECIDED)
               .values_list("item_id", "labels", "taxonomy_version_id"))
    for item, labels, version in decided:
        if labels is not None and version in (None, current):
            out.decided[item] = tuple(labels)
    return out


def _usernames(ids: Iterable[int]) -> dict[int, str]:
    return dict(get_user_model().objects.filter(pk__in=set(ids)).values_list("pk", "username"))
