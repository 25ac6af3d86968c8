"""Parsing taxonomy JSON (nested and flat forms): exact results, and errors that name the bad node's path."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from labeling.services.errors import ValidationFailed
from labeling.services.taxonomy_io import MAX_DEPTH, MAX_LABELS, taxonomy_document, taxonomy_parse


def error_of(document: Any) -> tuple[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        taxonomy_parse(document)
    return caught.value.message, caught.value.extra.get("path", "")


def nested(*labels: dict[str, Any]) -> dict[str, Any]:
    return {"name": "T", "labels": list(labels)}


def test_nested_form_flattens_parents_first_with_positions() -> None:
    parsed = taxonomy_parse({"name": " Abuse ", "multi_label": True, "labels": [
        {"key": "hate", "name": "Hate", "severity": 3, "action": "remove", "children": [
            {"key": "hate/slur", "name": "Slur", "description": "**slurs**", "positive_examples": ["x"]},
            {"key": "hate/threat", "name": "Threat", "negative_examples": ["y"]},
        ]},
        {"key": "ok", "name": "OK", "deprecated": True},
    ]})
    assert (parsed.name, parsed.multi_label, parsed.allow_non_leaf) == ("Abuse", True, False)
    assert [(p.key, p.parent_key, p.position, p.severity, p.action, p.deprecated) for p in parsed.labels] == [
        ("hate", None, 0, 3, "remove", False), ("hate/slur", "hate", 0, 0, "", False),
        ("hate/threat", "hate", 1, 0, "", False), ("ok", None, 1, 0, "", True)]
    assert parsed.labels[1].positive_examples == ["x"]
    assert parsed.leaf_keys() == ["hate/slur", "hate/threat", "ok"]


def test_flat_form_is_ordered_like_the_nested_one() -> None:
    flat = taxonomy_parse({"name": "T", "labels": [
        {"key": "hate/threat", "name": "Threat", "parent": "hate"},
        {"key": "ok", "name": "OK", "parent": None},
        {"key": "hate", "name": "Hate"},
        {"key": "hate/slur", "name": "Slur", "parent": "hate"},
    ]})
    assert [(p.key, p.parent_key, p.position) for p in flat.labels] == [
        ("ok", None, 0), ("hate", None, 1), ("hate/threat", "hate", 0), ("hate/slur", "hate", 1)]


def test_flat_form_cycle_is_named_with_its_path() -> None:
    message, path = error_of({"name": "T", "labels": [
        {"key": "ok", "name": "OK", "parent": None},
        {"key": "a", "name": "A", "parent": "c"},
        {"key": "b", "name": "B", "parent": "a"},
        {"key": "c", "name": "C", "parent": "b"},
    ]})
    assert message == "labels[1].parent: cycle a -> c -> b -> a"
    assert path == "labels[1].parent"


def test_flat_form_self_parent_and_unknown_parent() -> None:
    assert error_of({"name": "T", "labels": [{"key": "a", "name": "A", "parent": "a"}]}) == (
        "labels[0].parent: cycle a -> a", "labels[0].parent")
    assert error_of({"name": "T", "labels": [{"key": "a", "name": "A"}, {"key": "b", "parent": "zz"}]}) == (
        "labels[1].parent: unknown parent 'zz'", "labels[1].parent")


def test_flat_form_rejects_nested_children_too() -> None:
    assert error_of({"name": "T", "labels": [{"key": "a", "parent": None, "children": [{"key": "b"}]}]}) == (
        "labels[0].children: a flat taxonomy (nodes naming a 'parent') cannot also nest children",
        "labels[0].children")


def test_duplicate_key_names_both_places() -> None:
    assert error_of(nested({"key": "spam", "name": "S"},
                           {"key": "x", "name": "X", "children": [{"key": "spam", "name": "again"}]})) == (
        "labels[1].children[0].key: duplicate key 'spam' (first at labels[0])", "labels[1].children[0].key")
    assert error_of({"name": "T", "labels": [{"key": "a", "parent": None}, {"key": "a", "parent": None}]}) == (
        "labels[1].key: duplicate key 'a' (first at labels[0])", "labels[1].key")


def test_empty_name_and_bad_key() -> None:
    assert error_of(nested({"key": "a", "name": "A", "children": [{"key": "b", "name": "  "}]})) == (
        "labels[0].children[0].name: must be a non-empty string", "labels[0].children[0].name")
    message, path = error_of(nested({"key": "bad key!", "name": "A"}))
    assert path == "labels[0].key" and message.startswith("labels[0].key: must be 1-100 characters")


def test_too_deep_nested_and_flat() -> None:
    node: dict[str, Any] = {"key": f"k{MAX_DEPTH + 1}", "name": "deep"}
    for depth in range(MAX_DEPTH, 0, -1):
        node = {"key": f"k{depth}", "name": "n", "children": [node]}
    path = "labels[0]" + ".children[0]" * MAX_DEPTH
    assert error_of(nested(node)) == (f"{path}: taxonomy is deeper than {MAX_DEPTH} levels", path)
    chain = [{"key": f"k{i}", "parent": f"k{i - 1}" if i else None} for i in range(MAX_DEPTH + 1)]
    assert error_of({"name": "T", "labels": chain}) == (
        f"labels[{MAX_DEPTH}]: taxonomy is deeper than {MAX_DEPTH} levels", f"labels[{MAX_DEPTH}]")


def test_ten_thousand_labels_are_refused_with_the_limit() -> None:
    many = [{"key": f"k{i}", "name": f"L{i}"} for i in range(10_000)]
    assert error_of(nested(*many)) == (f"labels: more than {MAX_LABELS} labels (the limit is {MAX_LABELS})", "labels")
    flat = [{**label, "parent": None} for label in many]
    assert error_of({"name": "T", "labels": flat}) == (
        f"labels: 10000 labels, more than the limit of {MAX_LABELS}", "labels")
    assert len(taxonomy_parse(nested(*many[:MAX_LABELS])).labels) == MAX_LABELS


def test_one_megabyte_guideline_is_refused_naming_the_node() -> None:
    big = "x" * 1_000_000
    assert error_of(nested({"key": "a", "name": "A"}, {"key": "b", "name": "B", "description": big})) == (
        "labels[1].description: guideline longer than 100000 characters", "labels[1].description")
    assert len(taxonomy_parse(nested({"key": "a", "description": "y" * 100_000})).labels[0].description) == 100_000


def test_other_field_errors() -> None:
    assert error_of(nested({"key": "a", "severity": 11}))[1] == "labels[0].severity"
    assert error_of(nested({"key": "a", "positive_examples": "x"}))[0] == \
        "labels[0].positive_examples: must be a list of strings"
    assert error_of(nested({"key": "a", "negative_examples": ["e"] * 51}))[0] == \
        "labels[0].negative_examples: more than 50 examples"
    assert error_of({"name": "", "labels": [{"key": "a"}]}) == ("name: must be a non-empty string", "name")
    assert error_of({"name": "T", "labels": []}) == ("labels: must be a non-empty list", "labels")
    assert error_of([]) == ("taxonomy: must be a JSON object", "taxonomy")


def test_document_round_trips_through_parse() -> None:
    original = {"name": "Abuse", "multi_label": False, "allow_non_leaf": True, "labels": [
        {"key": "ok", "name": "OK", "description": "fine", "severity": 0, "action": "allow",
         "positive_examples": ["hi"], "negative_examples": [], "deprecated": False, "children": []},
        {"key": "hate", "name": "Hate", "description": "", "severity": 5, "action": "remove",
         "positive_examples": [], "negative_examples": ["no"], "deprecated": False, "children": [
             {"key": "hate/slur", "name": "Slur", "description": "d", "severity": 6, "action": "",
              "positive_examples": [], "negative_examples": [], "deprecated": True, "children": []}]},
    ]}
    parsed = taxonomy_parse(original)
    rows = [SimpleNamespace(**{k: getattr(p, k) for k in ("key", "name", "description", "parent_key", "position",
                                                          "severity", "action", "positive_examples",
                                                          "negative_examples", "deprecated")})
            for p in reversed(parsed.labels)]
    assert taxonomy_document(name=parsed.name, multi_label=parsed.multi_label, allow_non_leaf=parsed.allow_non_leaf,
                             labels=rows) == original
