"""Items to label, with the denormalised counters the queue's hot path reads.

``n_required`` and ``n_done`` live on the row so that "does this item still need a
reviewer?" is a column comparison the candidate scan can filter on, at 1M items,
without counting annotations. Both change only under the item's row lock
(labeling/services/queues.py), which is what keeps them exact.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models import F, Q

from labeling.querysets import ItemQuerySet


def new_random_key() -> float:
    # A fresh, independent uniform key per item: the fallback queue order is a
    # random permutation, so early labels are an unbiased sample of the pool.
    return random.SystemRandom().random()


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class MetaField(models.JSONField):
    """Item.meta: a JSONField whose stored value nests deeper than META_MAX_DEPTH (a row from before the import's
    cap, see below) reads as ``{"meta": META_TOO_DEEP}``: decoding it (json.loads recurses once per level) raised
    RecursionError on every page and queue call that loaded the item. Exports read the stored text, untouched.
    The plain JSONField in migrations."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, str) and json_text_too_deep(value):
            return {"meta": META_TOO_DEEP}
        return super().from_db_value(value, expression, connection)

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


class Item(models.Model):
    # No index of its own: the unique (project, external_id) index leads with project. A separate one let the
    # planner, fooled by statistics calling a project being imported empty, probe it and filter a whole
    # project per external id in the import's stored-rows look-up (36x slower imports).
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="items",
                                db_index=False)
    external_id = models.CharField(max_length=255)
    text = models.TextField()
    meta = MetaField(default=dict, blank=True)
    # sha256 hex of the UTF-8 text (learning.core.embedders.content_hash): the key of the vector cache.
    content_hash = models.CharField(max_length=64)
    # ISO 639 code, detected at import (labeling/services/languages.py): "" when the detector is unsure, NULL for
    # items stored before detection existed (``manage.py detect_languages`` fills those in).
    language = models.CharField(max_length=8, null=True, blank=True)

    is_gold = models.BooleanField(default=False)
    gold_labels = models.JSONField(null=True, blank=True, help_text="Expected answer (label keys) for gold items.")

    n_required = models.PositiveSmallIntegerField(default=1, help_text="Distinct reviewers this item needs.")
    n_done = models.PositiveSmallIntegerField(default=0, help_text="Annotations received.")
    # Served before the ranking when > 0 (e.g. re-queued after a taxonomy split).
    boost = models.IntegerField(default=0)
    random_key = models.FloatField(default=new_random_key)
    # Assigned once by the export's split service and never changed afterwards.
    split = models.CharField(max_length=16, choices=Split.choices, null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ItemQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="unique_item_external_id"),
        ]
        indexes = [
            models.Index(fields=["project", "content_hash"], name="item_project_hash"),
            # Per-language filters and figures (the item list, the queue's reviewer languages, stats by_language).
            models.Index(fields=["project", "language"], name="item_project_language"),
            # Fallback order and uniform exploration over items that still need reviewers.
            models.Index(
                fields=["project", "random_key"], name="item_open_random",
                condition=Q(n_done__lt=F("n_required")),
            ),
            models.Index(
                fields=["project", "-boost", "id"], name="item_open_boosted",
                condition=Q(boost__gt=0) & Q(n_done__lt=F("n_required")),
            ),
            # Gold mixing (labeling/services/gold.py) draws a random gold item without scanning the pool.
            models.Index(fields=["project", "random_key"], name="item_gold_random", condition=Q(is_gold=True)),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"

    @property
    def is_open(self) -> bool:
        return self.n_done < self.n_required


# ---------------------------------------------------------------------------------------------------------------
# Meta nesting. Python's json module, DRF's renderer and any recursive walk spend a stack frame per level, and
# meta nested ~900 levels deep (JSON allows it, and the first import accepted it) turned queue/next, reveal and
# the adjudication page into 500s, holding the reviewer's lease. So: the import refuses meta nested deeper than
# META_MAX_DEPTH (a per-line error, labeling/services/items_import/parse.py), far below any recursion limit, and every
# walk over meta is iterative (json_depth, json_map). Rows stored before the cap are shown with their too-deep
# parts replaced by META_TOO_DEEP (meta_shown), never a crash.

META_MAX_DEPTH = 32
"""Containers inside containers: ``{}`` and ``{"a": 1}`` are depth 1, ``{"a": [1]}`` depth 2."""
META_TOO_DEEP = "[nested too deeply to show]"


def json_depth(value: Any, *, stop_above: int = META_MAX_DEPTH) -> int:
    """How deeply ``value``'s lists and objects nest (0 for a scalar), iteratively. The walk stops as soon as the
    depth passes ``stop_above`` (it then answers ``stop_above + 1``), so a hostile value costs no more than that."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > stop_above:
                return stop_above + 1
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def json_map(value: Any, *, string: Callable[[str], str] | None = None, key: Callable[[str], str] | None = None,
             max_depth: int = META_MAX_DEPTH) -> Any:
    """A copy of the JSON value ``value`` with ``string`` applied to every string and ``key`` to every object
    key, built iteratively; a list or object deeper than ``max_depth`` becomes ``META_TOO_DEEP``. Two keys that
    map to the same key (two addresses masked to "[email]") are both kept: the second gets " (2)", and so on."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 1)]
    while stack:
        node, parent, slot, depth = stack.pop()
        if isinstance(node, dict | list) and depth > max_depth:
            parent[slot] = META_TOO_DEEP
        elif isinstance(node, dict):
            target: dict[str, Any] = {}
            parent[slot] = target
            for name, child in node.items():
                mapped = key(name) if key is not None else name
                if mapped in target:
                    n = 2
                    while f"{mapped} ({n})" in target:
                        n += 1
                    mapped = f"{mapped} ({n})"
                target[mapped] = None
                stack.append((child, target, mapped, depth + 1))
        elif isinstance(node, list):
            items: list[Any] = [None] * len(node)
            parent[slot] = items
            stack.extend((child, items, index, depth + 1) for index, child in enumerate(node))
        elif isinstance(node, str) and string is not None:
            parent[slot] = string(node)
        else:
            parent[slot] = node
    return root[0]


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_text_too_deep(text: str, *, limit: int = META_MAX_DEPTH) -> bool:
    """Does the JSON text ``text`` nest deeper than ``limit``? Read without decoding it (and without recursion):
    brackets outside strings are counted. Nearly free for ordinary meta, which has fewer brackets than the limit."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        first = token.group()[0]
        if first in "[{":
            depth += 1
            if depth > limit:
                return True
        elif first in "]}":
            depth -= 1
    return False


def meta_shown(meta: Any) -> Any:
    """Meta as a page or an API answer may carry it: unchanged, unless it nests deeper than META_MAX_DEPTH (a row
    stored before the import's cap), whose too-deep parts are replaced by META_TOO_DEEP."""
    if json_depth(meta) <= META_MAX_DEPTH:
        return meta
    return json_map(meta)
