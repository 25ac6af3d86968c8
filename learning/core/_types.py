"""Array type aliases shared by the core modules (kept in one place so signatures stay short)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
"""float32 arrays: vectors, probabilities, scores."""

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
"""int64 index arrays into a pool (always positions, never database ids)."""

BoolArray = npt.NDArray[np.bool_]

RandomState = int | np.random.Generator | None
"""What every random choice in the core accepts, as in scikit-learn: a seed, a Generator, or None."""


def as_generator(random_state: RandomState) -> np.random.Generator:
    """Turn a ``random_state`` into a Generator without touching numpy's global RNG."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)
