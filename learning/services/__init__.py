"""The learning side's workflows: database -> arrays -> learning.core -> batched writes through labeling.models.

- ``embedding.project_embed_items``: fill the vector cache for a project's items (batched, rerun-safe);
- ``retrain.model_version_train``: fit, score, rank, write and activate a new model version (idempotent);
- ``pool``: the bulk reads (one binary COPY for the vectors) and the training-label aggregation;
- ``evaluation``: cross-validated and exploration-sample figures for a model version.

The coalescing of requests (at most one run per project plus one follow-up, no lost label) lives in
learning/scheduling.py, which opens with the invariant. Nothing here imports labeling.services, labeling.api,
labeling.selectors or the frontend (import-linter checks it).
"""

from __future__ import annotations

from learning.services.embedding import EmbedResult, project_embed_items
from learning.services.retrain import RetrainResult, model_version_train

__all__ = ["EmbedResult", "RetrainResult", "model_version_train", "project_embed_items"]
