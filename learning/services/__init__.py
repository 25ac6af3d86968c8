"""The learning side's workflows: database -> arrays -> learning.core -> batched writes through labeling.models.

- ``embedding.project_embed_items``: fill the vector cache for a project's items (batched, rerun-safe);
- ``retrain.model_version_train``: fit, score, rank, write and activate a new model version (idempotent);
- ``pool``: the bulk reads (one binary COPY for the vectors) and the training-label aggregation;
- ``evaluation``: cross-validated and exploration-sample figures for a model version.

The coalescing of requests (at most one run per project plus one follow-up, no lost label) lives in
learning/scheduling.py, which opens with the invariant. Nothing here imports labeling.services, labeling.api,
labeling.selectors or the frontend (import-linter checks it).

The names below are resolved lazily (PEP 562), as in learning.core: a web process that imports
``learning.services.embedding`` (the embedding progress on the pages) or ``manage.py load_demo`` must not pay
for the retrain's scikit-learn import (about 1.3 s on the demo box) with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learning.services.embedding import EmbedResult, project_embed_items
    from learning.services.retrain import RetrainResult, model_version_train

_HOMES: dict[str, str] = {
    "EmbedResult": "embedding", "project_embed_items": "embedding",
    "RetrainResult": "retrain", "model_version_train": "retrain",
}

__all__ = ["EmbedResult", "RetrainResult", "model_version_train", "project_embed_items"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'learning.services' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"learning.services.{home}"), name)
    globals()[name] = value
    return value
