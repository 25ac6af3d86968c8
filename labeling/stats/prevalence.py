"""Prevalence of a label in a project's whole item pool, with a 95% interval, from an actively sampled queue.

THE PROBLEM. Most labels come from items the model chose (uncertainty, cold start, seed queries). Those are
not a sample of anything: near a rare class's decision boundary, positives are many times more common than
in the pool, so the share of positives among labelled items (the *naive* estimate) can be off by a factor
of ten. Labels picked that way are never averaged into a prevalence here.

WHAT THE QUEUE RECORDS. Each ranking r (one retrain) reserves a share of its positions (10% by default) for
*exploration*: a simple random sample, without replacement, of the N_r items that were unlabelled when the
ranking was built (learning/core/ranking.py), each with recorded inclusion probability pi_r = m_r / N_r.
Reviewers label a prefix of the ranking before the next retrain replaces it; the first j_r exploration
picks of a prefix are themselves a simple random sample of the frame. Before any ranking exists the queue
serves items in a uniformly random order ("fallback_random"), which is the same design with N_0 = N.

THE ESTIMATOR (sequential stratified Horvitz-Thompson). For ranking r the pool splits into two strata:
the items labelled before r was built (a census: their answers are known, total C_r) and the frame of N_r
unlabelled items, whose positive count is estimated by Horvitz-Thompson over the j_r exploration picks
actually labelled from it. Within one frame every pick has the same inclusion probability, so HT reduces
to N_r * ybar_r; using j_r (picks labelled) rather than m_r (picks drawn) keeps a half-consumed ranking
from being under-counted, which a blind sum of y / pi_r would do. So each ranking gives an estimate of the
pool's positive total T that is unbiased given everything before it:

    T_r  = C_r + N_r * ybar_r

The rankings' estimates are combined with fixed design weights w_r proportional to j_r / N_r (the inverse
of each one's variance up to the common factor q(1-q)), which makes the combination collapse to

    p    = T / N = (x + sum_r j_r C_r / N_r) / (sum_r j_r N / N_r)
         = a + V * (x / n),     n = sum_r j_r,  x = sum of y over all picks,
    a    = sum_r (j_r / N_r) C_r / (N H),   V = n / (N H),   H = sum_r j_r / N_r.

The errors of the T_r are martingale differences (each ranking's draw is fresh given the past), so the
variance is that of the pooled exploration proportion x / n scaled by V. The 95% interval is therefore
a + V * [Wilson interval of x out of n], continuity-corrected: Wilson because positives are rare (a Wald
interval collapses to a point when no positive was sampled), the correction because the plain Wilson
interval under-covers at the handful of positives a rare label gives. Pooling the rankings' Bernoulli
draws into one binomial over-states their variance when frames differ in prevalence, which only widens
the interval.

ASSUMPTIONS, stated so they can be checked: y is the item's final answer (the lead's adjudication where
one exists, else the share of its reviewers who gave the label), available for every labelled item; the
frames are the pool minus earlier-labelled items; which picks reviewers reach does not depend on their
answers. tests/labeling/selectors/test_prevalence_coverage.py simulates the whole loop through learning.core's
ranking and checks coverage and bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labeling.stats.proportions import wilson_interval

ESTIMATOR_DESCRIPTION = (
    "Sequential stratified Horvitz-Thompson: for each ranking, the items labelled before it are a census and "
    "its uniformly random exploration picks estimate the rest of the pool; rankings are combined with design "
    "weights j/N and the 95% interval is Wilson's (continuity-corrected) on the pooled exploration sample. "
    "Items the model chose (uncertainty, cold start, seed queries) enter only through the census, never as "
    "a sample."
)


@dataclass(frozen=True)
class SampleRound:
    """The probability sample of one ranking (or of the random fallback order before the first ranking)."""

    frame_size: int
    """N_r: items unlabelled when the ranking was built, the frame its exploration picks were drawn from."""
    known_total: float
    """C_r: sum of y over the pool's items outside the frame (labelled before the ranking was built)."""
    sample: Sequence[float]
    """y in [0, 1] for each exploration pick labelled from this frame (j_r = len(sample))."""
    inclusion_probability: float | None = None
    """pi_r as the queue recorded it (m_r / N_r); reported, not needed by the estimator (see module doc)."""
    key: Any = None
    """The ranking's identity (e.g. its version), carried through to the per-round report."""


@dataclass(frozen=True)
class PrevalenceEstimate:
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_sample: int
    """n: exploration picks labelled, over all rankings."""
    sample_positives: float
    """x: sum of y over those picks."""
    census_part: float = 0.0
    """a: the share of the estimate carried by items labelled before each ranking (a census)."""
    sampled_share: float = 0.0
    """V: the weighted share of the pool that was only sampled, not labelled."""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    estimator: str = ESTIMATOR_DESCRIPTION

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence,
            "n_sample": self.n_sample, "sample_positives": self.sample_positives,
            "census_part": self.census_part, "sampled_share": self.sampled_share,
        }


def naive_prevalence(y: Sequence[float]) -> float | None:
    """The share of positives among all labelled items, whatever picked them. Shown only to say why it is wrong."""
    if not y:
        return None
    return float(sum(y)) / len(y)


def _check_round(population_size: int, r: SampleRound) -> None:
    if r.frame_size < 0 or r.frame_size > population_size:
        raise ValueError(f"frame size {r.frame_size} outside 0..{population_size}")
    if len(r.sample) > r.frame_size:
        raise ValueError(f"{len(r.sample)} picks from a frame of {r.frame_size}")
    if r.known_total < 0 or r.known_total > population_size - r.frame_size + 1e-9:
        raise ValueError(f"known total {r.known_total} exceeds the {population_size - r.frame_size} known items")
    if any(not 0.0 <= y <= 1.0 for y in r.sample):
        raise ValueError("sample values must lie in [0, 1]")


def sequential_prevalence(*, population_size: int, rounds: Sequence[SampleRound],
                          confidence: float = 0.95) -> PrevalenceEstimate:
    """Prevalence over the whole pool of ``population_size`` items; see the module docstring."""
    if population_size <= 0:
        raise ValueError("population_size must be positive")
    for r in rounds:
        _check_round(population_size, r)
    used = [r for r in rounds if len(r.sample) > 0]
    report = [
        {"key": r.key, "frame_size": r.frame_size, "known_total": r.known_total, "n_sample": len(r.sample),
         "sample_positives": float(sum(r.sample)), "inclusion_probability": r.inclusion_probability}
        for r in rounds
    ]
    n = sum(len(r.sample) for r in used)
    x = float(sum(sum(r.sample) for r in used))
    if n == 0:
        return PrevalenceEstimate(None, None, None, confidence, 0, 0.0, rounds=report)
    h = sum(len(r.sample) / r.frame_size for r in used)
    big_n = float(population_size)
    census_part = sum(len(r.sample) / r.frame_size * r.known_total for r in used) / (big_n * h)
    sampled_share = n / (big_n * h)
    q_low, q_high = wilson_interval(x, n, confidence)
    estimate = census_part + sampled_share * (x / n)
    return PrevalenceEstimate(
        estimate=estimate,
        low=census_part + sampled_share * q_low,
        high=census_part + sampled_share * q_high,
        confidence=confidence, n_sample=n, sample_positives=x,
        census_part=census_part, sampled_share=sampled_share, rounds=report,
    )
