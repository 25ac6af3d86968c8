"""Pure statistics over plain arrays: agreement (Krippendorff's alpha, Cohen's kappa, label confusion) and
prevalence with confidence intervals from the queue's probability sample.

Nothing here imports Django or the project's models: labeling/selectors/quality.py turns database rows
into the plain Python/numpy inputs these functions take, so every figure is testable with hand-computed
examples and cross-checked against reference implementations.
"""

from __future__ import annotations

from labeling.stats.agreement import (
    AlphaResult,
    KappaResult,
    alpha_from_codes,
    binary_alphas,
    cohen_kappa,
    coincidence_matrix,
    coincidences_from_codes,
    consensus_agreement,
    consensus_codes,
    krippendorff_alpha_nominal,
    majority_value,
    pairwise_kappa,
)
from labeling.stats.prevalence import (
    ESTIMATOR_DESCRIPTION,
    PrevalenceEstimate,
    SampleRound,
    naive_prevalence,
    sequential_prevalence,
)
from labeling.stats.proportions import difference_interval, wilson_interval

__all__ = [
    "ESTIMATOR_DESCRIPTION",
    "AlphaResult",
    "KappaResult",
    "PrevalenceEstimate",
    "SampleRound",
    "alpha_from_codes",
    "binary_alphas",
    "cohen_kappa",
    "coincidence_matrix",
    "coincidences_from_codes",
    "consensus_agreement",
    "consensus_codes",
    "difference_interval",
    "krippendorff_alpha_nominal",
    "majority_value",
    "naive_prevalence",
    "pairwise_kappa",
    "sequential_prevalence",
    "wilson_interval",
]
