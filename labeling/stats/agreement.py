"""Inter-annotator agreement: Krippendorff's alpha (nominal), Cohen's kappa, label confusion, consensus.

Inputs are plain Python: a *unit* is one item, given as the list of the values its reviewers chose (one
value per reviewer, missing answers simply absent). A value is any hashable: a label key for single-label
projects, a frozenset of keys for multi-label ones, or a bool for "did this reviewer use label L".

Krippendorff's alpha (nominal), following Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":

    o_ck  = sum over units u of  (number of c-k pairs of values in u) / (m_u - 1)   (coincidence matrix)
    n_c   = sum_k o_ck,   n = sum_c n_c            (only units with m_u >= 2 values are pairable)
    D_o   = sum_{c != k} o_ck                      (observed disagreement, unnormalised)
    D_e   = sum_{c != k} n_c n_k / (n - 1)         (expected disagreement, unnormalised)
    alpha = 1 - D_o / D_e

alpha is undefined (None) when fewer than two pairable values exist or when every pairable value is the
same (D_e = 0): agreement cannot be told apart from chance then, and reporting 1.0 would flatter.

Cohen's kappa for two reviewers over the items both answered: (p_o - p_e) / (1 - p_e), with p_e from each
reviewer's own marginal distribution. Undefined (None) when p_e = 1.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class AlphaResult:
    alpha: float | None
    n_units: int
    """Pairable units: items with at least two answers."""
    n_values: int
    """Pairable values (n in Krippendorff's notation): answers on pairable units."""
    observed_disagreement: float
    expected_disagreement: float

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n_units": self.n_units, "n_values": self.n_values}


@dataclass(frozen=True)
class KappaResult:
    kappa: float | None
    n: int
    """Items both reviewers answered."""
    observed: float | None
    expected: float | None


def _encode(units: Iterable[Sequence[Hashable]],
            values: Sequence[Hashable] | None) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Units of values as two code arrays, one entry per answer: (domain, unit index, value index)."""
    domain: list[Hashable] = list(values) if values is not None else []
    position = {v: i for i, v in enumerate(domain)}
    unit_codes: list[int] = []
    value_codes: list[int] = []
    for u, unit in enumerate(units):
        for value in unit:
            code = position.get(value)
            if code is None:
                if values is not None:
                    raise ValueError(f"value {value!r} is not in the given domain")
                code = position[value] = len(domain)
                domain.append(value)
            unit_codes.append(u)
            value_codes.append(code)
    return domain, np.asarray(unit_codes, dtype=np.int64), np.asarray(value_codes, dtype=np.int64)


def _pairable(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense unit numbers, answers per unit (m_u), and the mask of answers on units with m_u >= 2."""
    _ids, dense = np.unique(unit, return_inverse=True)
    m = np.bincount(dense).astype(np.float64)
    return dense, m, m[dense] >= 2


def coincidences_from_codes(unit: np.ndarray, value: np.ndarray, n_values: int) -> np.ndarray:
    """Krippendorff's coincidence matrix from one row per answer: its unit (item) code and its value code.

    sum over units of (n_u n_u^T - diag(n_u)) / (m_u - 1), as one sparse product: linear in the answers, so a
    project's hundred thousand answers take milliseconds, not a Python loop per item.
    """
    unit = np.asarray(unit, dtype=np.int64)
    value = np.asarray(value, dtype=np.int64)
    if unit.size == 0:
        return np.zeros((n_values, n_values), dtype=np.float64)
    dense, m, keep = _pairable(unit)
    if not keep.any():
        return np.zeros((n_values, n_values), dtype=np.float64)
    rows, cols = dense[keep], value[keep]
    counts = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(m.size, n_values))
    weights = np.zeros(m.size)
    weights[m >= 2] = 1.0 / (m[m >= 2] - 1.0)
    weighted = sparse.diags(weights) @ counts
    coincidences = np.asarray((weighted.T @ counts).toarray(), dtype=np.float64)
    coincidences -= np.diag(np.asarray(weighted.sum(axis=0)).ravel())
    return coincidences


def _alpha(o: np.ndarray, n_units: int) -> AlphaResult:
    n_c = o.sum(axis=1)
    n = float(n_c.sum())
    if n < 2:
        return AlphaResult(None, n_units, round(n), 0.0, 0.0)
    observed = float(o.sum() - np.trace(o))
    expected = float((n * n - float((n_c * n_c).sum())) / (n - 1.0))
    if expected <= 1e-12:
        return AlphaResult(None, n_units, round(n), observed, expected)
    return AlphaResult(1.0 - observed / expected, n_units, round(n), observed, expected)


def alpha_from_codes(unit: np.ndarray, value: np.ndarray, n_values: int) -> AlphaResult:
    """Krippendorff's alpha (nominal) from code arrays (see ``coincidences_from_codes``)."""
    unit = np.asarray(unit, dtype=np.int64)
    n_units = 0
    if unit.size:
        _dense, m, _keep = _pairable(unit)
        n_units = int((m >= 2).sum())
    return _alpha(coincidences_from_codes(unit, value, n_values), n_units)


def binary_alphas(unit: np.ndarray, present: np.ndarray) -> list[AlphaResult]:
    """Alpha of each column of ``present`` (answers x labels, bool: did this answer use the label?).

    The per-label agreement: for one label every answer is a yes or a no. With n1 yes and n0 no answers in a
    unit of m, the unit adds n1(n1-1)/(m-1) to o_11, n0(n0-1)/(m-1) to o_00 and n0 n1/(m-1) to each of o_01
    and o_10; all labels at once, vectorised.
    """
    unit = np.asarray(unit, dtype=np.int64)
    present = np.asarray(present, dtype=np.float64)
    if present.ndim != 2 or present.shape[0] != unit.size:
        raise ValueError("present must be a 2-d array with one row per answer")
    n_labels = present.shape[1]
    if unit.size == 0:
        return [AlphaResult(None, 0, 0, 0.0, 0.0) for _ in range(n_labels)]
    dense, m, keep = _pairable(unit)
    n_units = int((m >= 2).sum())
    indicator = sparse.csr_matrix((np.ones(int(keep.sum())), (dense[keep], np.flatnonzero(keep))),
                                  shape=(m.size, unit.size))
    yes = np.asarray(indicator @ present, dtype=np.float64)  # per unit: how many answers used each label
    pairable = m >= 2
    yes, size = yes[pairable], m[pairable][:, None]
    no = size - yes
    weight = 1.0 / (size - 1.0)
    o11 = (weight * yes * (yes - 1.0)).sum(axis=0)
    o00 = (weight * no * (no - 1.0)).sum(axis=0)
    o01 = (weight * yes * no).sum(axis=0)
    out = []
    for j in range(n_labels):
        o = np.array([[o00[j], o01[j]], [o01[j], o11[j]]])
        out.append(_alpha(o, n_units))
    return out


def coincidence_matrix(units: Iterable[Sequence[Hashable]],
                       values: Sequence[Hashable] | None = None) -> tuple[list[Hashable], np.ndarray]:
    """Krippendorff's coincidence matrix o_ck over the pairable units, with its value order.

    It doubles as the confusion between labels when there is no ground truth: o_ck counts how often one
    reviewer said c where another said k on the same item (each unit weighted 1 / (m_u - 1), so a unit
    contributes exactly m_u to the total). It is symmetric.
    """
    domain, unit, value = _encode(units, values)
    return domain, coincidences_from_codes(unit, value, len(domain))


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> AlphaResult:
    """Krippendorff's alpha for nominal data; see the module docstring for the formula."""
    domain, unit, value = _encode(units, None)
    return alpha_from_codes(unit, value, len(domain))


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> KappaResult:
    """Cohen's kappa between two reviewers' answers to the same items, position by position."""
    if len(a) != len(b):
        raise ValueError("both reviewers' answers must cover the same items")
    n = len(a)
    if n == 0:
        return KappaResult(None, 0, None, None)
    observed = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[v] * count_b[v] for v in count_a) / (n * n)
    if expected >= 1.0:
        return KappaResult(None, n, observed, expected)
    return KappaResult((observed - expected) / (1.0 - expected), n, observed, expected)


def pairwise_kappa(answers: Iterable[tuple[Hashable, Hashable, Hashable]],
                   *, min_items: int = 1) -> list[tuple[Hashable, Hashable, KappaResult]]:
    """Cohen's kappa for every pair of reviewers who answered at least ``min_items`` items in common.

    ``answers`` are (item, reviewer, value) triples, at most one per (item, reviewer). Pairs come out in
    the order of first appearance of their reviewers, so output is deterministic for ordered input.
    """
    by_reviewer: dict[Hashable, dict[Hashable, Hashable]] = defaultdict(dict)
    for item, reviewer, value in answers:
        by_reviewer[reviewer][item] = value
    out: list[tuple[Hashable, Hashable, KappaResult]] = []
    for r1, r2 in combinations(list(by_reviewer), 2):
        first, second = by_reviewer[r1], by_reviewer[r2]
        shared = [item for item in first if item in second]
        if len(shared) < min_items:
            continue
        out.append((r1, r2, cohen_kappa([first[i] for i in shared], [second[i] for i in shared])))
    return out


def majority_value(values: Sequence[Hashable]) -> Hashable | None:
    """The strictly most common value, or None on a tie or with no values."""
    if not values:
        return None
    ranked = Counter(values).most_common(2)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def consensus_agreement(answers: Iterable[tuple[Hashable, Hashable, Hashable]]) -> Mapping[Hashable, tuple[int, int]]:
    """Per reviewer, (agreed, compared): how often their answer equals the *other* reviewers' majority.

    Leave-one-out on purpose: counting a reviewer's own vote in the consensus would inflate their score,
    most on items with few reviewers. Items where the others tie (or nobody else answered) are not compared.
    """
    by_item: dict[Hashable, list[tuple[Hashable, Hashable]]] = defaultdict(list)
    for item, reviewer, value in answers:
        by_item[item].append((reviewer, value))
    tally: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for entries in by_item.values():
        if len(entries) < 2:
            continue
        for i, (reviewer, value) in enumerate(entries):
            others = [v for j, (_r, v) in enumerate(entries) if j != i]
            consensus = majority_value(others)
            if consensus is None:
                continue
            tally[reviewer][1] += 1
            tally[reviewer][0] += int(value == consensus)
    return {reviewer: (agreed, compared) for reviewer, (agreed, compared) in tally.items()}


def consensus_codes(unit: np.ndarray, reviewer: np.ndarray, value: np.ndarray,
                    n_values: int) -> dict[int, tuple[int, int]]:
    """``consensus_agreement`` over code arrays, vectorised: per reviewer code, (agreed, compared).

    For one answer with value v, the other answers' majority follows from the unit's three largest value
    counts c1 >= c2 >= c3 (values v1, v2): without v1 (if v = v1) the others' top is v1 when c1 - 1 > c2, a
    tie when equal, else v2 when c2 > c3; without v2, it is v1 when c1 > c3; without any other value, v1 when
    c1 > c2. So one sort of the (unit, value) counts replaces a Python loop over every answer.
    """
    unit = np.asarray(unit, dtype=np.int64)
    reviewer = np.asarray(reviewer, dtype=np.int64)
    value = np.asarray(value, dtype=np.int64)
    if unit.size == 0:
        return {}
    dense, m, _keep = _pairable(unit)
    cell, count = np.unique(dense * n_values + value, return_counts=True)
    cell_unit, cell_value = cell // n_values, cell % n_values
    order = np.lexsort((cell_value, -count, cell_unit))  # by unit, then count descending
    cell_unit, cell_value, count = cell_unit[order], cell_value[order], count[order]
    first = np.searchsorted(cell_unit, np.arange(m.size))
    sizes = np.diff(np.append(first, cell_unit.size))
    top = np.full((m.size, 3), -1, dtype=np.int64)
    counts = np.zeros((m.size, 3), dtype=np.int64)
    for k in range(3):
        has = sizes > k
        top[has, k] = cell_value[first[has] + k]
        counts[has, k] = count[first[has] + k]
    v1, v2 = top[dense, 0], top[dense, 1]
    c1, c2, c3 = counts[dense, 0], counts[dense, 1], counts[dense, 2]
    majority = np.full(unit.size, -1, dtype=np.int64)
    is_v1, is_v2 = value == v1, (value == v2) & (value != v1)
    other = ~is_v1 & ~is_v2
    majority[is_v1 & (c1 - 1 > c2)] = v1[is_v1 & (c1 - 1 > c2)]
    pick_v2 = is_v1 & (c1 - 1 < c2) & (c2 > c3)
    majority[pick_v2] = v2[pick_v2]
    pick_v1 = (is_v2 & (c1 > c3)) | (other & (c1 > c2))
    majority[pick_v1] = v1[pick_v1]
    compared = (majority >= 0) & (m[dense] >= 2)
    out: dict[int, tuple[int, int]] = {}
    agreed = compared & (majority == value)
    for code in np.unique(reviewer[compared]).tolist():
        mine = reviewer == code
        out[int(code)] = (int((agreed & mine).sum()), int((compared & mine).sum()))
    return out

