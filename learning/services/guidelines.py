"""The taxonomy's guideline text as the ranking's per-class seed vectors (``rank_pool(class_vectors=...)``).

A strategy that seeks classes with no label yet (``StrategySpec.seek_share``) looks near each unseen class's
guideline text first: the policy lead's description of a label is the best seed query there is for it. Texts
are "name: description" per leaf; a leaf without a description gets an all-zero row, which the ranking reads
as "no text" (it is then sought through k-means picks only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labeling.models import Label
from learning.core.embedders import Embedder
from learning.services.embedding import vectors_for_texts


def guideline_texts(*, taxonomy_version_id: int, leaf_keys: Sequence[str]) -> tuple[str, ...]:
    """Per leaf, in ``leaf_keys`` order: "name: description", or "" where the label has no description."""
    rows = {key: (name, description) for key, name, description in
            Label.objects.filter(version_id=taxonomy_version_id).values_list("key", "name", "description")}
    out = []
    for key in leaf_keys:
        name, description = rows.get(key, (key, ""))
        out.append(f"{name or key}: {description.strip()}" if description and description.strip() else "")
    return tuple(out)


def guideline_vectors(texts: Sequence[str], embedder: Embedder) -> np.ndarray:
    """(len(texts), dim) float32: each non-empty text embedded (through the vector cache), zero rows for ""."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    have = [i for i, t in enumerate(texts) if t]
    if have:
        out[have] = np.asarray(vectors_for_texts([texts[i] for i in have], embedder), dtype=np.float32)
    return out
