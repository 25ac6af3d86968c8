"""Hierarchical taxonomies: leaves, ancestors and probability roll-up."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.taxonomy import Taxonomy, rollup_proba

TREE = {
    "name": "abuse",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "OK"},
        {
            "key": "abuse",
            "name": "Abuse",
            "children": [
                {"key": "spam", "name": "Spam"},
                {"key": "harm", "name": "Harm", "children": [{"key": "threat"}, {"key": "self_harm"}]},
            ],
        },
    ],
}


def test_parse_tree() -> None:
    tax = Taxonomy.from_dict(TREE)
    assert tax.keys == ("ok", "abuse", "spam", "harm", "threat", "self_harm")
    assert tax.leaf_keys == ("ok", "spam", "threat", "self_harm")
    assert tax.ancestors("threat") == ("harm", "abuse")
    assert tax.is_leaf("spam") and not tax.is_leaf("harm")


def test_duplicate_keys_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate taxonomy key 'a'"):
        Taxonomy.from_dict({"labels": [{"key": "a"}, {"key": "b", "children": [{"key": "a"}]}]})


def test_single_label_rollup_sums_children() -> None:
    tax = Taxonomy.from_dict(TREE)
    proba = np.array([[0.4, 0.1, 0.2, 0.3]], dtype=np.float32)  # ok, spam, threat, self_harm
    out = rollup_proba(proba, ["ok", "spam", "threat", "self_harm"], tax)
    np.testing.assert_allclose(out, [[0.4, 0.6, 0.1, 0.5, 0.2, 0.3]], atol=1e-6)


def test_multi_label_rollup_takes_max_and_missing_leaf_is_zero() -> None:
    tax = Taxonomy.from_dict({**TREE, "multi_label": True})
    proba = np.array([[0.9, 0.7, 0.2]], dtype=np.float32)  # ok, spam, threat; self_harm unknown to the model
    out = rollup_proba(proba, ["ok", "spam", "threat"], tax)
    np.testing.assert_allclose(out, [[0.9, 0.7, 0.7, 0.2, 0.2, 0.0]], atol=1e-6)
