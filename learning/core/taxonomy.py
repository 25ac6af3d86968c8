"""Label taxonomies as the core sees them: leaf keys, parent links, and probability roll-up to parents.

The JSON shape is CONTRACT.md's: ``{"name", "multi_label", "labels": [{"key", "name", "description",
"children": [...]}]}``. Models are trained on *leaf* keys only; a parent's probability is derived from its
leaves (``rollup_proba``):

- single-label: leaves are mutually exclusive, so P(parent) = sum of its leaves' probabilities (exact);
- multi-label: leaves are independent yes/no questions, so the sum could exceed 1; we use the max of the
  children, a lower bound on P(any child) that needs no independence assumption (noisy-OR would).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learning.core._types import FloatArray


@dataclass(frozen=True)
class Taxonomy:
    """A parsed taxonomy. ``keys`` lists every node in pre-order; ``parent[key]`` is None for a root."""

    keys: tuple[str, ...]
    parent: Mapping[str, str | None]
    multi_label: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Taxonomy:
        keys: list[str] = []
        parent: dict[str, str | None] = {}

        def walk(nodes: Sequence[Mapping[str, Any]], up: str | None) -> None:
            for node in nodes:
                key = str(node["key"])
                if key in parent:
                    raise ValueError(f"duplicate taxonomy key {key!r}")
                keys.append(key)
                parent[key] = up
                walk(node.get("children") or (), key)

        walk(data.get("labels") or (), None)
        if not keys:
            raise ValueError("a taxonomy needs at least one label")
        return cls(keys=tuple(keys), parent=parent, multi_label=bool(data.get("multi_label", False)))

    @classmethod
    def flat(cls, keys: Sequence[str], *, multi_label: bool = False) -> Taxonomy:
        return cls.from_dict({"multi_label": multi_label, "labels": [{"key": k} for k in keys]})

    @property
    def leaf_keys(self) -> tuple[str, ...]:
        parents = {p for p in self.parent.values() if p is not None}
        return tuple(k for k in self.keys if k not in parents)

    def is_leaf(self, key: str) -> bool:
        return key in self.parent and key not in set(self.parent.values())

    def ancestors(self, key: str) -> tuple[str, ...]:
        """The chain of parents from nearest to root (empty for a root)."""
        out: list[str] = []
        up = self.parent[key]
        while up is not None:
            out.append(up)
            up = self.parent[up]
        return tuple(out)


def rollup_proba(proba: FloatArray, classes: Sequence[str], taxonomy: Taxonomy) -> FloatArray:
    """Extend leaf probabilities (columns in ``classes`` order) to every taxonomy node, in ``taxonomy.keys`` order.

    A leaf missing from ``classes`` gets probability 0. Parents are sum (single-label) or max (multi-label) of
    their children, applied bottom-up so grandparents see their whole subtree.
    """
    proba = np.asarray(proba, dtype=np.float32)
    column = {c: i for i, c in enumerate(classes)}
    out = np.zeros((proba.shape[0], len(taxonomy.keys)), dtype=np.float32)
    slot = {k: i for i, k in enumerate(taxonomy.keys)}
    leaves = set(taxonomy.leaf_keys)
    for key in taxonomy.keys:
        if key in leaves and key in column:
            out[:, slot[key]] = proba[:, column[key]]
    # Reverse pre-order visits every child before its parent.
    for key in reversed(taxonomy.keys):
        up = taxonomy.parent[key]
        if up is None:
            continue
        if taxonomy.multi_label:
            np.maximum(out[:, slot[up]], out[:, slot[key]], out=out[:, slot[up]])
        else:
            out[:, slot[up]] += out[:, slot[key]]
    if not taxonomy.multi_label:
        np.clip(out, 0.0, 1.0, out=out)
    return out
