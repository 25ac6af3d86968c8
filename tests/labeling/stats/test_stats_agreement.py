"""labeling.stats.agreement: exact values on hand-computed examples, cross-checked against reference packages."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from labeling.stats import (
    alpha_from_codes,
    binary_alphas,
    cohen_kappa,
    coincidence_matrix,
    consensus_agreement,
    consensus_codes,
    krippendorff_alpha_nominal,
    majority_value,
    pairwise_kappa,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units,
# nominal, with missing values. Published as 0.743; the exact value is 113/152 (D_o = 8, D_e = 1216/39, n = 40).
K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def units_of(matrix: list[list[int | None]]) -> list[list[int]]:
    """Reliability data (coders x units, None = missing) as the units-of-values input."""
    return [[v for v in column if v is not None] for column in zip(*matrix, strict=True)]


def test_alpha_two_coders_three_units_hand_computed() -> None:
    # o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6.
    # D_o = 2, D_e = (36 - 18) / 5 = 18/5, alpha = 1 - 2 / (18/5) = 4/9.
    result = krippendorff_alpha_nominal([["a", "a"], ["a", "b"], ["b", "b"]])
    assert result.alpha == pytest.approx(float(Fraction(4, 9)), abs=1e-15)
    assert result.observed_disagreement == 2.0
    assert result.expected_disagreement == pytest.approx(18 / 5, abs=1e-15)
    assert (result.n_units, result.n_values) == (3, 6)


def test_alpha_krippendorff_2011_example_is_113_over_152() -> None:
    result = krippendorff_alpha_nominal(units_of(K2011))
    assert result.alpha == pytest.approx(113 / 152, abs=1e-15)
    assert result.alpha is not None and round(result.alpha, 3) == 0.743
    assert (result.n_units, result.n_values) == (11, 40)  # unit 12 has one value: not pairable
    assert result.observed_disagreement == pytest.approx(8.0, abs=1e-12)
    assert result.expected_disagreement == pytest.approx(1216 / 39, abs=1e-12)


def test_alpha_three_coders_unequal_unit_sizes() -> None:
    # Unit 1: (x, x, y) weight 1/2: o_xx = 2*1/2 = 1, o_xy = o_yx = 2*1/2 = 1.
    # Unit 2: (y, y) weight 1: o_yy = 2.  Unit 3: (x, y) weight 1: o_xy = o_yx = 1.
    # o = [[1, 2], [2, 2]], n_x = 3, n_y = 4, n = 7. D_o = 4, D_e = (49 - 9 - 16) / 6 = 4. alpha = 0.
    result = krippendorff_alpha_nominal([["x", "x", "y"], ["y", "y"], ["x", "y"]])
    assert result.alpha == pytest.approx(0.0, abs=1e-15)
    values, matrix = coincidence_matrix([["x", "x", "y"], ["y", "y"], ["x", "y"]])
    assert values == ["x", "y"]
    assert matrix.tolist() == [[1.0, 2.0], [2.0, 2.0]]


def test_alpha_perfect_agreement_is_one_and_undefined_cases_are_none() -> None:
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"]]).alpha == 1.0
    # One value only: expected disagreement is 0, so alpha is undefined (not a flattering 1.0).
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]).alpha is None
    # Nothing pairable at all.
    single = krippendorff_alpha_nominal([["a"], ["b"], []])
    assert (single.alpha, single.n_units, single.n_values) == (None, 0, 0)


def test_coincidence_matrix_with_a_fixed_domain_keeps_unused_values_and_rejects_strangers() -> None:
    values, matrix = coincidence_matrix([["a", "a"], ["a", "b"], ["b", "b"]], values=["a", "b", "c"])
    assert values == ["a", "b", "c"]
    assert matrix.tolist() == [[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="'z' is not in the given domain"):
        coincidence_matrix([["a", "z"]], values=["a", "b"])


reliability = st.integers(min_value=2, max_value=5).flatmap(
    lambda coders: st.lists(
        st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=3)), min_size=coders, max_size=coders),
        min_size=1, max_size=30,
    )
)


@settings(max_examples=150, deadline=None)
@given(reliability)
def test_alpha_matches_the_krippendorff_package(columns: list[list[int | None]]) -> None:
    units = [[v for v in column if v is not None] for column in columns]
    ours = krippendorff_alpha_nominal(units)
    pairable = {v for unit in units if len(unit) >= 2 for v in unit}
    if ours.alpha is None:
        assert len(pairable) <= 1
        return
    data = np.array([[np.nan if v is None else float(v) for v in column] for column in columns]).T
    theirs = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert ours.alpha == pytest.approx(theirs, abs=1e-9)


def test_alpha_matches_the_krippendorff_package_on_seeded_large_data() -> None:
    rng = np.random.default_rng(20240611)
    truth = rng.integers(0, 4, size=500)
    data = np.where(rng.random((6, 500)) < 0.8, truth, rng.integers(0, 4, size=(6, 500))).astype(float)
    data[rng.random((6, 500)) < 0.3] = np.nan
    units = [[int(v) for v in data[:, u] if not np.isnan(v)] for u in range(500)]
    ours = krippendorff_alpha_nominal(units).alpha
    assert ours == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-12)


def test_kappa_hand_computed() -> None:
    # p_o = 2/3; A uses a twice, B once: p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9; kappa = (2/9) / (5/9) = 2/5.
    result = cohen_kappa(["a", "a", "b"], ["a", "b", "b"])
    assert result.kappa == pytest.approx(0.4, abs=1e-15)
    assert result.observed == pytest.approx(2 / 3, abs=1e-15)
    assert result.expected == pytest.approx(4 / 9, abs=1e-15)
    assert result.n == 3


def test_kappa_textbook_two_by_two_table() -> None:
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohen_kappa(a, b)
    assert result.kappa == pytest.approx(0.4, abs=1e-15)
    assert result.observed == pytest.approx(0.7, abs=1e-15)
    assert result.expected == pytest.approx(0.5, abs=1e-15)


def test_kappa_undefined_and_bad_input() -> None:
    assert cohen_kappa(["a", "a"], ["a", "a"]).kappa is None  # p_e = 1
    assert cohen_kappa([], []).kappa is None
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=1, max_size=40))
def test_kappa_matches_scikit_learn(pairs: list[tuple[str, str]]) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = cohen_kappa(a, b).kappa
    if ours is None:
        assert len(set(a) | set(b)) == 1
        return
    assert ours == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_pairwise_kappa_uses_shared_items_only_and_respects_min_items() -> None:
    answers = [
        (1, "ann", "a"), (1, "bob", "a"), (2, "ann", "a"), (2, "bob", "b"), (3, "ann", "b"), (3, "bob", "b"),
        (1, "cy", "a"), (4, "cy", "b"),
    ]
    pairs = pairwise_kappa(answers)
    assert [(a, b, r.n) for a, b, r in pairs] == [("ann", "bob", 3), ("ann", "cy", 1), ("bob", "cy", 1)]
    assert pairs[0][2].kappa == pytest.approx(0.4, abs=1e-15)  # the hand-computed example above
    assert [(a, b) for a, b, _r in pairwise_kappa(answers, min_items=2)] == [("ann", "bob")]


def test_majority_and_leave_one_out_consensus() -> None:
    assert majority_value(["a", "b", "a"]) == "a"
    assert majority_value(["a", "b"]) is None
    assert majority_value([]) is None
    answers = [
        # Item 1: ann, bob say a, cy says b. ann vs {bob a, cy b}: tie -> not compared; same for bob;
        # cy vs {a, a}: majority a, cy disagrees.
        (1, "ann", "a"), (1, "bob", "a"), (1, "cy", "b"),
        # Item 2: ann a, bob a: each compared with the other, both agree.
        (2, "ann", "a"), (2, "bob", "a"),
        # Item 3: only ann: not compared.
        (3, "ann", "b"),
    ]
    assert dict(consensus_agreement(answers)) == {"cy": (0, 1), "ann": (1, 1), "bob": (1, 1)}


def test_the_stats_package_is_plain_python() -> None:
    """labeling/stats must stay importable (and testable) without Django: it is pure functions over arrays."""
    import subprocess
    import sys

    code = ("import sys, labeling.stats\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')]\n"
            "print(bad)\n"
            "raise SystemExit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            cwd=str(Path(__file__).resolve().parents[3]))
    assert result.returncode == 0, result.stdout + result.stderr


@settings(max_examples=100, deadline=None)
@given(reliability)
def test_array_forms_agree_with_the_list_forms(columns: list[list[int | None]]) -> None:
    """binary_alphas (all labels at once) and alpha_from_codes give what the plain per-unit forms give."""
    units = [[v for v in column if v is not None] for column in columns]
    unit = np.array([u for u, values in enumerate(units) for _v in values], dtype=np.int64)
    value = np.array([v for values in units for v in values], dtype=np.int64)
    coded, listed = alpha_from_codes(unit, value, 4), krippendorff_alpha_nominal(units)
    assert (coded.n_units, coded.n_values) == (listed.n_units, listed.n_values)
    assert (coded.alpha is None) == (listed.alpha is None)
    if listed.alpha is not None:
        assert coded.alpha == pytest.approx(listed.alpha, abs=1e-9)
    present = np.stack([value == label for label in range(4)], axis=1) if value.size else np.zeros((0, 4), bool)
    for label, result in enumerate(binary_alphas(unit, present)):
        expected = krippendorff_alpha_nominal([[v == label for v in values] for values in units])
        assert (result.n_units, result.n_values) == (expected.n_units, expected.n_values)
        if expected.alpha is None:
            assert result.alpha is None
        else:
            assert result.alpha == pytest.approx(expected.alpha, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)), max_size=60))
def test_vectorised_consensus_matches_the_plain_one(raw: list[tuple[int, int, int]]) -> None:
    by_pair: dict[tuple[int, int], int] = {}
    for i, r, v in raw:
        by_pair.setdefault((i, r), v)  # at most one answer per (item, reviewer), as the database enforces
    answers = [(i, r, v) for (i, r), v in by_pair.items()]
    arrays = [np.array([a[k] for a in answers], dtype=np.int64) for k in range(3)]
    assert consensus_codes(arrays[0], arrays[1], arrays[2], 4) == dict(consensus_agreement(answers))
