"""The only module that imports modAL: uncertainty measures over probability arrays.

Why an adapter: modAL-python 0.4.2.1 is unmaintained. Its ``ActiveLearner.teach()`` calls
``sklearn.utils.check_X_y(..., force_all_finite=...)``, a keyword scikit-learn removed in 1.8, so teach() raises
TypeError on the scikit-learn we ship. Its ``*_sampling`` helpers also break ties with numpy's *global* RNG,
which our no-global-RNG rule forbids. What still works, and what we use, are its pure probability-level
measures (``_proba_uncertainty``, ``_proba_margin``, ``_proba_entropy``). We never build an ActiveLearner: the
core keeps no stateful learner (fit a fresh estimator per retrain, rank with pure functions). If modAL ever
disappears, only this file changes; tests/learning/core/test_modal_adapter.py pins the behaviour.

Import cost: ``modAL.utils.data`` runs ``try: import torch`` at import time, only to accept torch tensors, which
the core never passes. Importing torch costs 5-30 s on our 2-core boxes, and the simulate CLI with the hashing
embedder (and every unit test) would pay it. So modAL is imported on first use with ``torch`` masked in
``sys.modules`` (its bare ``except`` then skips the tensor support), unless torch is already loaded anyway (a
MiniLM worker), in which case nothing is masked. Call ``load_modal()`` at worker start-up to pay the import
before threads exist.

All three functions return an *uncertainty* where larger means "more worth asking about", and accept
(n, k) probability rows; they return float32 of shape (n,).
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np

from learning.core._types import FloatArray

_lock = threading.Lock()
_uncertainty: ModuleType | None = None


def load_modal() -> ModuleType:
    """``modAL.uncertainty``, imported once, without dragging torch in (see the module docstring)."""
    global _uncertainty
    with _lock:
        if _uncertainty is None:
            masked = "torch" not in sys.modules
            if masked:
                sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
            try:
                from modAL import uncertainty
            finally:
                if masked and sys.modules.get("torch", "") is None:
                    del sys.modules["torch"]
            _uncertainty = uncertainty
        return _uncertainty


def _as_proba(proba: Any) -> FloatArray:
    arr = np.asarray(proba, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"expected an (n, k) probability array, got shape {arr.shape}")
    return arr


def least_confidence(proba: Any) -> FloatArray:
    """1 - max_k p_k (modAL ``classifier_uncertainty`` at the probability level)."""
    arr = _as_proba(proba)
    out: FloatArray = np.asarray(load_modal()._proba_uncertainty(arr), dtype=np.float32)
    return out


def margin(proba: Any) -> FloatArray:
    """1 - (p_top1 - p_top2): modAL's margin turned so that a small margin ranks first.

    With one column there is no second class; modAL gives margin 0, i.e. uncertainty 1. The ranking never
    reaches here with one column (the cold-start rule needs two classes), but the value is defined.
    """
    arr = _as_proba(proba)
    out: FloatArray = (1.0 - np.asarray(load_modal()._proba_margin(arr), dtype=np.float32)).astype(np.float32)
    return out


def entropy(proba: Any) -> FloatArray:
    """Shannon entropy (nats) of each row (modAL ``classifier_entropy`` at the probability level)."""
    arr = _as_proba(proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.asarray(load_modal()._proba_entropy(arr), dtype=np.float32)
    # scipy gives nan for an all-zero row (a class set the model has never seen); that row carries no signal.
    out: FloatArray = np.nan_to_num(ent, nan=0.0).astype(np.float32)
    return out
