"""The ONE entry point the labeling side may call into learning.

``request_retrain(project_id)`` must be called inside the transaction that
committed new labels; it schedules work with ``transaction.on_commit`` so a
rolled-back submit never triggers a retrain.
"""

from __future__ import annotations


def request_retrain(*, project_id: int) -> None:
    """Placeholder wiring point: replaced by the coalescing scheduler of the learning worker."""
    del project_id
