"""Parsing, validating and writing taxonomy JSON (the contract's format).

Two input forms are accepted:

- **nested** (the contract's): ``{"name", "multi_label", "labels": [{"key", "name", "description",
  "children": [...]}]}``;
- **flat**: the same, but every node names its parent instead of nesting children:
  ``"labels": [{"key": "hate", ...}, {"key": "hate/slur", "parent": "hate", ...}]``. Spreadsheets and
  other tools export this form; it is the only one that can express a cycle, so it is checked for one.

Optional per-label fields on either form: ``severity`` (0-10), ``action``, ``positive_examples``,
``negative_examples`` (lists of strings) and ``deprecated``. Both forms come out as one flat,
checked list (parents before children), and errors name the path of the bad node, e.g.
``labels[2].children[0].key: duplicate key 'spam'``. Nothing is written until the whole document
is valid. ``taxonomy_document`` is the inverse: label rows back to the nested form, so an export
re-imports to the same taxonomy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from labeling.services.errors import ValidationFailed

MAX_LABELS = 2000
MAX_DEPTH = 6
MAX_GUIDELINE_CHARS = 100_000
MAX_NAME_CHARS = 200
MAX_EXAMPLES = 50
MAX_EXAMPLE_CHARS = 5_000
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
    if len(value) > MAX_EXAMPLES:
        raise ValidationFailed(f"{path}: more than {MAX_EXAMPLES} examples", path=path)
    for i, example in enumerate(value):
        if len(example) > MAX_EXAMPLE_CHARS:
            raise ValidationFailed(f"{path}[{i}]: example longer than {MAX_EXAMPLE_CHARS} characters",
                                   path=f"{path}[{i}]")
    return list(value)


def _check_node(node: Any, path: str, seen: dict[str, str], parent_key: str | None, position: int) -> ParsedLabel:
    """Validate one label object (either form); ``seen`` maps keys already met to their paths."""
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
    if description is None:
        description = ""
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
    return ParsedLabel(
        key=key, name=label_name.strip(), description=description, parent_key=parent_key, position=position,
        severity=severity, action=action.strip(),
        positive_examples=_string_list(node.get("positive_examples"), f"{path}.positive_examples"),
        negative_examples=_string_list(node.get("negative_examples"), f"{path}.negative_examples"),
        deprecated=deprecated,
    )


def _is_flat(nodes: list[Any]) -> bool:
    return any(isinstance(node, dict) and "parent" in node for node in nodes)


def taxonomy_parse(document: Any) -> ParsedTaxonomy:
    """Validate a taxonomy document (nested or flat form) and flatten it depth-first, parents before children."""
    if not isinstance(document, dict):
        raise ValidationFailed("taxonomy: must be a JSON object", path="taxonomy")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name: must be a non-empty string", path="name")
    if len(name) > MAX_NAME_CHARS:
        raise ValidationFailed(f"name: longer than {MAX_NAME_CHARS} characters", path="name")
    multi_label = document.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise ValidationFailed("multi_label: must be true or false", path="multi_label")
    allow_non_leaf = document.get("allow_non_leaf", False)
    if not isinstance(allow_non_leaf, bool):
        raise ValidationFailed("allow_non_leaf: must be true or false", path="allow_non_leaf")
    nodes = document.get("labels")
    if not isinstance(nodes, list) or not nodes:
        raise ValidationFailed("labels: must be a non-empty list", path="labels")

    flat = _parse_flat(nodes) if _is_flat(nodes) else _parse_nested(nodes)
    return ParsedTaxonomy(name=name.strip(), multi_label=multi_label, allow_non_leaf=allow_non_leaf, labels=flat)


def _too_many() -> ValidationFailed:
    return ValidationFailed(f"labels: more than {MAX_LABELS} labels (the limit is {MAX_LABELS})", path="labels")


def _parse_nested(nodes: list[Any]) -> list[ParsedLabel]:
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
        label = _check_node(node, path, seen, parent_key, position)
        flat.append(label)
        if len(flat) > MAX_LABELS:
            raise _too_many()
        children = node.get("children", [])
        if children is None:
            children = []
        if not isinstance(children, list):
            raise ValidationFailed(f"{path}.children: must be a list", path=f"{path}.children")
        for i, child in reversed(list(enumerate(children))):
            stack.append((child, f"{path}.children[{i}]", label.key, depth + 1, i))
    return flat


def _parse_flat(nodes: list[Any]) -> list[ParsedLabel]:
    """The flat ``{key, parent}`` form: check every node, then the parent links (unknown, cycle, depth)."""
    if len(nodes) > MAX_LABELS:
        raise ValidationFailed(f"labels: {len(nodes)} labels, more than the limit of {MAX_LABELS}", path="labels")
    seen: dict[str, str] = {}
    checked: list[tuple[ParsedLabel, str]] = []
    for i, node in enumerate(nodes):
        path = f"labels[{i}]"
        if isinstance(node, dict) and node.get("children"):
            raise ValidationFailed(
                f"{path}.children: a flat taxonomy (nodes naming a 'parent') cannot also nest children",
                path=f"{path}.children",
            )
        parent = node.get("parent") if isinstance(node, dict) else None
        label = _check_node(node, path, seen, None, 0)
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ValidationFailed(f"{path}.parent: must be a label key or null", path=f"{path}.parent")
        checked.append((label, parent or ""))

    parent_of = {label.key: parent for label, parent in checked}
    for label, parent in checked:
        path = seen[label.key]
        if parent and parent not in parent_of:
            raise ValidationFailed(f"{path}.parent: unknown parent {parent!r}", path=f"{path}.parent")
    # Cycle and depth: follow each node's parent chain; memoised depths keep this linear.
    depth_of: dict[str, int] = {}
    for label, _ in checked:
        chain: list[str] = []
        on_chain: set[str] = set()
        key: str = label.key
        while key and key not in depth_of:
            if key in on_chain:
                cycle = [*chain[chain.index(key):], key]
                path = seen[key]
                raise ValidationFailed(
                    f"{path}.parent: cycle {' -> '.join(cycle)}", path=f"{path}.parent", cycle=cycle,
                )
            chain.append(key)
            on_chain.add(key)
            key = parent_of[key]
        base = depth_of[key] if key else 0
        for offset, member in enumerate(reversed(chain), start=1):
            depth_of[member] = base + offset
            if base + offset > MAX_DEPTH:
                path = seen[member]
                raise ValidationFailed(f"{path}: taxonomy is deeper than {MAX_DEPTH} levels", path=path)

    # Order parents before children; siblings keep their order in the input.
    children: dict[str, list[ParsedLabel]] = {}
    for label, parent in checked:
        children.setdefault(parent, []).append(label)
    flat: list[ParsedLabel] = []
    stack: list[tuple[ParsedLabel, str | None, int]] = [
        (label, None, i) for i, label in reversed(list(enumerate(children.get("", []))))
    ]
    while stack:
        label, parent_key, position = stack.pop()
        flat.append(ParsedLabel(
            key=label.key, name=label.name, description=label.description, parent_key=parent_key,
            position=position, severity=label.severity, action=label.action,
            positive_examples=label.positive_examples, negative_examples=label.negative_examples,
            deprecated=label.deprecated,
        ))
        for i, child in reversed(list(enumerate(children.get(label.key, [])))):
            stack.append((child, label.key, i))
    return flat


def taxonomy_document(*, name: str, multi_label: bool, allow_non_leaf: bool,
                      labels: Iterable[Any]) -> dict[str, Any]:
    """The nested contract document for label rows (anything with Label's attributes); ``taxonomy_parse``'s inverse.

    ``labels`` must carry ``key``, ``parent_key`` (or ``parent_id``/``id``), ``position`` and the other fields.
    """
    rows = list(labels)
    key_of_id = {getattr(row, "id", None): row.key for row in rows}
    nodes: dict[str, dict[str, Any]] = {}
    order: list[tuple[str | None, int, int, str]] = []
    for index, row in enumerate(rows):
        parent_key = getattr(row, "parent_key", None)
        if parent_key is None and getattr(row, "parent_id", None) is not None:
            parent_key = key_of_id[row.parent_id]
        nodes[row.key] = {
            "key": row.key, "name": row.name, "description": row.description,
            "severity": row.severity, "action": row.action,
            "positive_examples": list(row.positive_examples or []),
            "negative_examples": list(row.negative_examples or []),
            "deprecated": row.deprecated, "children": [],
        }
        order.append((parent_key, row.position, index, row.key))
    roots: list[dict[str, Any]] = []
    for parent_key, _, _, key in sorted(order, key=lambda entry: (entry[1], entry[2])):
        (nodes[parent_key]["children"] if parent_key else roots).append(nodes[key])
    return {"name": name, "multi_label": multi_label, "allow_non_leaf": allow_non_leaf, "labels": roots}
