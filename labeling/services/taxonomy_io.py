"""Parsing and validating taxonomy JSON (the contract's format) into a flat, checked list of labels.

Errors name the path of the bad node, e.g. ``labels[2].children[0].key: duplicate key 'spam'``,
and nothing is written until the whole document is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from labeling.services.errors import ValidationFailed

MAX_LABELS = 2000
MAX_DEPTH = 6
MAX_GUIDELINE_CHARS = 100_000
MAX_NAME_CHARS = 200
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")


@dataclass(frozen=True)
class ParsedLabel:
    key: str
    name: str
    description: str
    parent_key: str | None
    position: int
    severity: int = 0
    action: str = ""
    positive_examples: list[str] = field(default_factory=list)
    negative_examples: list[str] = field(default_factory=list)
    deprecated: bool = False


@dataclass(frozen=True)
class ParsedTaxonomy:
    name: str
    multi_label: bool
    allow_non_leaf: bool
    labels: list[ParsedLabel]

    def leaf_keys(self) -> list[str]:
        parents = {label.parent_key for label in self.labels if label.parent_key}
        return [label.key for label in self.labels if label.key not in parents]


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(f"{path}: must be a list of strings", path=path)
    return list(value)


def taxonomy_parse(document: Any) -> ParsedTaxonomy:
    """Validate a taxonomy document and flatten it depth-first, parents before children."""
    if not isinstance(document, dict):
        raise ValidationFailed("taxonomy: must be a JSON object", path="taxonomy")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name: must be a non-empty string", path="name")
    multi_label = document.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise ValidationFailed("multi_label: must be true or false", path="multi_label")
    allow_non_leaf = document.get("allow_non_leaf", False)
    if not isinstance(allow_non_leaf, bool):
        raise ValidationFailed("allow_non_leaf: must be true or false", path="allow_non_leaf")
    nodes = document.get("labels")
    if not isinstance(nodes, list) or not nodes:
        raise ValidationFailed("labels: must be a non-empty list", path="labels")

    flat: list[ParsedLabel] = []
    seen: dict[str, str] = {}
    # Iterative walk: a hostile, deeply nested document cannot exhaust the stack.
    stack: list[tuple[Any, str, str | None, int, int]] = [
        (node, f"labels[{i}]", None, 1, i) for i, node in reversed(list(enumerate(nodes)))
    ]
    while stack:
        node, path, parent_key, depth, position = stack.pop()
        if depth > MAX_DEPTH:
            raise ValidationFailed(f"{path}: taxonomy is deeper than {MAX_DEPTH} levels", path=path)
        if not isinstance(node, dict):
            raise ValidationFailed(f"{path}: must be an object", path=path)
        key = node.get("key")
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise ValidationFailed(
                f"{path}.key: must be 1-100 characters of letters, digits and _.:/- starting with a letter or digit",
                path=f"{path}.key",
            )
        if key in seen:
            raise ValidationFailed(f"{path}.key: duplicate key {key!r} (first at {seen[key]})", path=f"{path}.key")
        seen[key] = path
        label_name = node.get("name", key)
        if not isinstance(label_name, str) or not label_name.strip():
            raise ValidationFailed(f"{path}.name: must be a non-empty string", path=f"{path}.name")
        if len(label_name) > MAX_NAME_CHARS:
            raise ValidationFailed(f"{path}.name: longer than {MAX_NAME_CHARS} characters", path=f"{path}.name")
        description = node.get("description", "")
        if not isinstance(description, str):
            raise ValidationFailed(f"{path}.description: must be a string", path=f"{path}.description")
        if len(description) > MAX_GUIDELINE_CHARS:
            raise ValidationFailed(
                f"{path}.description: guideline longer than {MAX_GUIDELINE_CHARS} characters",
                path=f"{path}.description",
            )
        severity = node.get("severity", 0)
        if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 10:
            raise ValidationFailed(f"{path}.severity: must be an integer from 0 to 10", path=f"{path}.severity")
        action = node.get("action", "") or ""
        if not isinstance(action, str) or len(action) > 32:
            raise ValidationFailed(f"{path}.action: must be a short string", path=f"{path}.action")
        deprecated = node.get("deprecated", False)
        if not isinstance(deprecated, bool):
            raise ValidationFailed(f"{path}.deprecated: must be true or false", path=f"{path}.deprecated")
        flat.append(ParsedLabel(
            key=key, name=label_name.strip(), description=description, parent_key=parent_key, position=position,
            severity=severity, action=action,
            positive_examples=_string_list(node.get("positive_examples"), f"{path}.positive_examples"),
            negative_examples=_string_list(node.get("negative_examples"), f"{path}.negative_examples"),
            deprecated=deprecated,
        ))
        if len(flat) > MAX_LABELS:
            raise ValidationFailed(f"labels: more than {MAX_LABELS} labels", path="labels")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise ValidationFailed(f"{path}.children: must be a list", path=f"{path}.children")
        for i, child in reversed(list(enumerate(children))):
            stack.append((child, f"{path}.children[{i}]", key, depth + 1, i))
    return ParsedTaxonomy(name=name.strip(), multi_label=multi_label, allow_non_leaf=allow_non_leaf, labels=flat)
