"""labeling.stats.prevalence and proportions: hand-computed values, exact unbiasedness by enumeration, references."""

from __future__ import annotations

from itertools import combinations

import pytest
from scipy.stats import binomtest

from labeling.stats import (
    SampleRound,
    difference_interval,
    naive_prevalence,
    sequential_prevalence,
    wilson_interval,
)


def test_wilson_intervals_match_scipy() -> None:
    for successes, n in [(0, 20), (1, 20), (2, 6), (5, 10), (81, 263), (20, 20), (3, 1000)]:
        for method, continuity in (("wilson", False), ("wilsoncc", True)):
            reference = binomtest(successes, n).proportion_ci(confidence_level=0.95, method=method)
            low, high = wilson_interval(successes, n, 0.95, continuity=continuity)
            assert low == pytest.approx(reference.low, abs=1e-12), (successes, n, method)
            assert high == pytest.approx(reference.high, abs=1e-12), (successes, n, method)
    low, high = wilson_interval(0, 20)
    assert low == 0.0
    assert high == pytest.approx(0.200453345013487, abs=1e-12)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(3, 2)


def test_difference_interval_newcombe_1998_example() -> None:
    # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10:
    # 56/70 - 48/80 = 0.2000, 95% interval 0.0524 to 0.3339.
    d, low, high = difference_interval(56, 70, 48, 80)
    assert d == pytest.approx(0.2, abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_one_round_without_census_is_the_sample_mean_with_its_wilson_interval() -> None:
    result = sequential_prevalence(population_size=1000, rounds=[SampleRound(1000, 0.0, [1, 0, 0, 1, 0])])
    assert result.estimate == pytest.approx(0.4, abs=1e-15)
    assert (result.low, result.high) == pytest.approx(wilson_interval(2, 5), abs=1e-15)
    assert (result.n_sample, result.sample_positives, result.census_part, result.sampled_share) == (5, 2.0, 0.0, 1.0)


def test_two_rounds_hand_computed() -> None:
    # N = 100. Ranking A: frame 100, nothing known, picks [1, 0, 0, 0]. Ranking B: 20 items labelled before it
    # (6 positives), frame 80, picks [0, 1].
    # p = (x + sum_r j_r C_r / N_r) / (sum_r j_r N / N_r) = (2 + 2*6/80) / (4*100/100 + 2*100/80) = 2.15 / 6.5
    rounds = [SampleRound(100, 0.0, [1, 0, 0, 0], key="A"), SampleRound(80, 6.0, [0, 1], key="B")]
    result = sequential_prevalence(population_size=100, rounds=rounds)
    assert result.estimate == pytest.approx(43 / 130, abs=1e-15)
    # a = (2/80 * 6) / (100 * 0.065) and V = 6 / 6.5; the interval is a + V * Wilson(2 of 6).
    a, v = 0.15 / 6.5, 6 / 6.5
    low, high = wilson_interval(2, 6)
    assert result.census_part == pytest.approx(a, abs=1e-15)
    assert result.sampled_share == pytest.approx(v, abs=1e-15)
    assert result.low == pytest.approx(a + v * low, abs=1e-15)
    assert result.high == pytest.approx(a + v * high, abs=1e-15)
    assert [r["key"] for r in result.rounds] == ["A", "B"]
    assert [r["n_sample"] for r in result.rounds] == [4, 2]


def test_no_sample_gives_no_estimate_and_bad_rounds_are_refused() -> None:
    empty = sequential_prevalence(population_size=10, rounds=[SampleRound(10, 0.0, [])])
    assert (empty.estimate, empty.low, empty.high, empty.n_sample) == (None, None, None, 0)
    with pytest.raises(ValueError, match="3 picks from a frame of 2"):
        sequential_prevalence(population_size=10, rounds=[SampleRound(2, 0.0, [0, 0, 1])])
    with pytest.raises(ValueError, match="known total 5"):
        sequential_prevalence(population_size=10, rounds=[SampleRound(8, 5.0, [0])])
    with pytest.raises(ValueError, match=r"sample values must lie in \[0, 1\]"):
        sequential_prevalence(population_size=10, rounds=[SampleRound(10, 0.0, [2.0])])
    with pytest.raises(ValueError, match="population_size must be positive"):
        sequential_prevalence(population_size=0, rounds=[])


def test_sequential_estimator_is_exactly_unbiased_over_every_possible_sample() -> None:
    """Enumerate a whole two-ranking design on 8 items (3 positives) and average the estimate over all outcomes.

    Ranking 1 draws 2 exploration items uniformly from all 8; the "model" then picks the 2 remaining items it
    likes best, which favours positives (the bias the estimator must not inherit). Ranking 2 draws 1 exploration
    item uniformly from the 4 still unlabelled. Every (draw 1, draw 2) pair is equally likely.
    """
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    truth = sum(y) / len(y)
    estimates: list[float] = []
    naives: list[float] = []
    for first in combinations(range(8), 2):
        remaining = [i for i in range(8) if i not in first]
        model = sorted(remaining, key=lambda i: (y[i], i), reverse=True)[:2]
        labelled = set(first) | set(model)
        frame = [i for i in range(8) if i not in labelled]
        known = float(sum(y[i] for i in labelled))
        for second in frame:
            rounds = [SampleRound(8, 0.0, [y[i] for i in first]), SampleRound(4, known, [y[second]])]
            estimate = sequential_prevalence(population_size=8, rounds=rounds).estimate
            naive = naive_prevalence([y[i] for i in (*labelled, second)])
            assert estimate is not None and naive is not None
            estimates.append(estimate)
            naives.append(naive)
    assert len(estimates) == 28 * 4
    assert sum(estimates) / len(estimates) == pytest.approx(truth, abs=1e-12)
    # The naive share among labelled items is far off (153/280 = 0.546 against 0.375): the model's picks are
    # mostly positives.
    assert sum(naives) / len(naives) == pytest.approx(153 / 280, abs=1e-12)


def test_naive_prevalence() -> None:
    assert naive_prevalence([1, 0, 0, 1]) == 0.5
    assert naive_prevalence([]) is None
