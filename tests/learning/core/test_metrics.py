"""Metrics with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learning.core.metrics import (
    area_under_curve,
    average_precision,
    horvitz_thompson_total,
    labels_to_reach,
    macro_f1,
)


def test_macro_f1() -> None:
    # class a: P=1, R=0.5 -> F1=2/3; class b: P=2/3, R=1 -> F1=0.8; class c absent and never predicted -> 0.
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"]) == pytest.approx((2 / 3 + 0.8) / 3)


def test_average_precision_positive_and_macro() -> None:
    truth = ["spam", "ham", "spam", "ham"]
    proba = np.array([[0.1, 0.9], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]])  # columns ham, spam
    # spam ranking: 0.9 (spam), 0.6 (ham), 0.3 (spam) -> AP = (1/1 + 2/3) / 2
    assert average_precision(truth, proba, ["ham", "spam"], positive="spam") == pytest.approx(5 / 6)
    # ham ranking: 0.8 (ham), 0.7 (spam), 0.4 (ham) -> AP = (1 + 2/3) / 2
    assert average_precision(truth, proba, ["ham", "spam"]) == pytest.approx(5 / 6)
    assert math.isnan(average_precision(["x"], proba[:1], ["ham", "spam"]))
    with pytest.raises(ValueError, match="'eggs' is not one of the model's classes"):
        average_precision(truth, proba, ["ham", "spam"], positive="eggs")


def test_area_under_curve_is_mean_height() -> None:
    assert area_under_curve([10, 20, 30], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert area_under_curve([10], [0.4]) == 0.4
    with pytest.raises(ValueError):
        area_under_curve([], [])


def test_labels_to_reach() -> None:
    assert labels_to_reach([10, 20, 30], [0.5, 0.9, 0.95], 0.9) == 20
    assert labels_to_reach([10, 20, 30], [0.5, 0.9, 0.95], 0.99) is None


def test_horvitz_thompson_total() -> None:
    # 4 exploration draws out of 100 unlabelled items (pi = 0.04), one positive -> 25 positives estimated.
    assert horvitz_thompson_total([1, 0, 0, 0], [0.04] * 4) == pytest.approx(25.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        horvitz_thompson_total([1], [0.0])
