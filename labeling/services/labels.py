"""Validating a reviewer's or a lead's label list against one (immutable, published) taxonomy version.

``labels_validate`` is the one rule both the submit path (labeling/services/annotations.py) and an adjudication's
decision (labeling/services/adjudication.py) apply: a non-empty list of known, current keys, leaves only unless the
version allows inner labels, one key unless it is multi-label. It has its own module so that those two services can
both import it without importing each other. A published version never changes, so each process caches the
facts of the versions it has seen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labeling.models import Label, TaxonomyVersion
from labeling.services.errors import ValidationFailed

MAX_LISTED_KEYS = 20


@dataclass(frozen=True, slots=True)
class _LabelFacts:
    is_leaf: bool
    deprecated: bool
    children: tuple[str, ...]


def _label_facts(version: TaxonomyVersion) -> dict[str, _LabelFacts]:
    if version.is_published and version.published_at is not None:
        return _published_label_facts(version.pk, version.published_at)
    return _read_label_facts(version.pk)


# A published version and its labels never change (labeling/models/taxonomy.py), so each process keeps the facts
# of the versions it has seen. published_at is in the key so a reused primary key (a restored database) misses.
@functools.lru_cache(maxsize=256)
def _published_label_facts(version_id: int, published_at: datetime) -> dict[str, _LabelFacts]:
    return _read_label_facts(version_id)


def _read_label_facts(version_id: int) -> dict[str, _LabelFacts]:
    rows = list(Label.objects.filter(version_id=version_id).values_list("id", "key", "parent_id", "deprecated"))
    key_of = {label_id: key for label_id, key, _parent, _dep in rows}
    children: dict[str, list[str]] = {}
    for _label_id, key, parent_id, _dep in rows:
        if parent_id is not None:
            children.setdefault(key_of[parent_id], []).append(key)
    return {
        key: _LabelFacts(is_leaf=key not in children, deprecated=deprecated, children=tuple(children.get(key, ())))
        for _label_id, key, _parent, deprecated in rows
    }


def _quoted(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys)


def labels_validate(*, version: TaxonomyVersion, labels: Any) -> list[str]:
    """The cleaned label list (duplicates removed, order kept), or a 400 naming what is wrong."""
    if not isinstance(labels, list) or not labels or not all(isinstance(key, str) and key for key in labels):
        raise ValidationFailed("labels: must be a non-empty list of label keys", field="labels")
    cleaned = list(dict.fromkeys(labels))
    facts = _label_facts(version)
    unknown = [key for key in cleaned if key not in facts]
    if unknown:
        known = sorted(key for key, fact in facts.items() if not fact.deprecated)
        listed = ", ".join(known[:MAX_LISTED_KEYS]) + (", ..." if len(known) > MAX_LISTED_KEYS else "")
        noun = "label" if len(unknown) == 1 else "labels"
        raise ValidationFailed(
            f"unknown {noun} {_quoted(unknown)} in taxonomy version {version.number}; valid labels: {listed}",
            field="labels", labels=unknown,
        )
    deprecated = [key for key in cleaned if facts[key].deprecated]
    if deprecated:
        noun = "label" if len(deprecated) == 1 else "labels"
        raise ValidationFailed(
            f"deprecated {noun} {_quoted(deprecated)} in taxonomy version {version.number}; choose a current label",
            field="labels", labels=deprecated,
        )
    if not version.allow_non_leaf:
        inner = [key for key in cleaned if not facts[key].is_leaf]
        if inner:
            key = inner[0]
            raise ValidationFailed(
                f"label {key!r} is not a leaf; choose one of its children ({_quoted(list(facts[key].children))})",
                field="labels", labels=inner,
            )
    if not version.multi_label and len(cleaned) > 1:
        raise ValidationFailed(
            f"this taxonomy takes exactly one label; got {len(cleaned)}: {_quoted(cleaned)}",
            field="labels", labels=cleaned,
        )
    return cleaned
