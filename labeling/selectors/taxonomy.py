"""Reads of taxonomies shaped for the API and pages: trees, the version history, diffs, guidelines.

Guidelines are Markdown written by policy leads. ``guideline_html`` is the ONE place that turns one
into HTML: markdown-it with raw HTML disabled, then nh3 with a short allow-list (no images, no
attributes but ``href`` on links, http/https/mailto only). Everything else about a label is text and
is rendered as text.
"""

from __future__ import annotations

from typing import Any

import nh3
from markdown_it import MarkdownIt

from labeling.models import Label, LabelMigration, Project, TaxonomyVersion
from labeling.services.errors import NotFound, ValidationFailed
from labeling.services.taxonomy_io import taxonomy_document

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "del",
}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
LABEL_FIELDS = ("key", "name", "description", "severity", "action", "positive_examples", "negative_examples",
                "deprecated")


def guideline_html(markdown: str) -> str:
    """Sanitised HTML for a guideline. Safe to mark safe: nh3 drops everything off the allow-list."""
    if not markdown:
        return ""
    rendered = _MARKDOWN.render(markdown)
    return nh3.clean(rendered, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")


def _version_labels(version: TaxonomyVersion) -> list[Label]:
    return list(Label.objects.filter(version=version).select_related("parent").order_by("position", "id"))


def version_document(version: TaxonomyVersion) -> dict[str, Any]:
    """The version as the contract's nested JSON document (the export format; re-imports losslessly)."""
    return taxonomy_document(name=version.name, multi_label=version.multi_label,
                             allow_non_leaf=version.allow_non_leaf, labels=_version_labels(version))


def _add_html(nodes: list[dict[str, Any]], path: str = "labels") -> None:
    for i, node in enumerate(nodes):
        node["description_html"] = guideline_html(node["description"])
        node["is_leaf"] = not node["children"]
        node["path"] = f"{path}[{i}]"
        _add_html(node["children"], f"{path}[{i}].children")


def version_meta(version: TaxonomyVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "status": version.status,
        "name": version.name,
        "multi_label": version.multi_label,
        "allow_non_leaf": version.allow_non_leaf,
        "changelog": version.changelog,
        "created_at": version.created_at,
        "published_at": version.published_at,
        "published_by": version.published_by.username if version.published_by else None,
    }


def version_tree(version: TaxonomyVersion) -> dict[str, Any]:
    """Metadata plus the nested label tree, each label with its sanitised ``description_html``."""
    document = version_document(version)
    _add_html(document["labels"])
    return {**version_meta(version), "labels": document["labels"]}


def current_version(project: Project) -> TaxonomyVersion:
    version = project.current_taxonomy_version
    if version is None:
        raise NotFound("this project has no published taxonomy yet")
    return version


def version_get(project: Project, number: int) -> TaxonomyVersion:
    version = (TaxonomyVersion.objects.select_related("published_by")
               .filter(project=project, number=number, status=TaxonomyVersion.Status.PUBLISHED).first())
    if version is None:
        raise NotFound(f"taxonomy version {number} does not exist")
    return version


def _migration_dict(migration: LabelMigration) -> dict[str, Any]:
    return {"kind": migration.kind, "sources": list(migration.sources), "targets": list(migration.targets),
            "requeue_priority": migration.requeue_priority}


def version_history(project: Project, *, before: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Published versions, newest first, each with its label count and the migrations that led to it.

    ``before`` keeps only versions numbered below it and ``limit`` caps the count (a page of the API's list).
    """
    published = TaxonomyVersion.objects.filter(project=project, status=TaxonomyVersion.Status.PUBLISHED)
    if before is not None:
        published = published.filter(number__lt=before)
    ordered = published.select_related("published_by").order_by("-number")
    versions = list(ordered[:limit] if limit is not None else ordered)
    counts: dict[int, int] = {}
    for version_id in Label.objects.filter(version__in=versions).values_list("version_id", flat=True):
        counts[version_id] = counts.get(version_id, 0) + 1
    migrations: dict[int, list[dict[str, Any]]] = {}
    for migration in LabelMigration.objects.filter(to_version__in=versions).order_by("id"):
        migrations.setdefault(migration.to_version_id, []).append(_migration_dict(migration))
    current_id = project.current_taxonomy_version_id
    return [
        {**version_meta(version), "n_labels": counts.get(version.pk, 0), "is_current": version.pk == current_id,
         "migrations": migrations.get(version.pk, [])}
        for version in versions
    ]


def _flat(version: TaxonomyVersion) -> dict[str, dict[str, Any]]:
    """key -> fields (+ parent, position among siblings), in tree pre-order."""
    rows: dict[str, dict[str, Any]] = {}
    roots = version_document(version)["labels"]
    stack: list[tuple[dict[str, Any], str | None, int]] = [
        (node, None, i) for i, node in reversed(list(enumerate(roots)))]
    while stack:
        node, parent, position = stack.pop()
        rows[node["key"]] = {**{name: node[name] for name in LABEL_FIELDS}, "parent": parent, "position": position}
        stack.extend((child, node["key"], i) for i, child in reversed(list(enumerate(node["children"]))))
    return rows


def version_diff(project: Project, from_number: int, to_number: int) -> dict[str, Any]:
    """What changed between two published versions (either order), and the migrations declared in between."""
    if from_number == to_number:
        raise ValidationFailed("from and to must name two different versions", path="to")
    old, new = version_get(project, from_number), version_get(project, to_number)
    before, after = _flat(old), _flat(new)
    header = {
        name: {"from": getattr(old, name), "to": getattr(new, name)}
        for name in ("name", "multi_label", "allow_non_leaf") if getattr(old, name) != getattr(new, name)
    }
    changed = []
    for key in [k for k in after if k in before]:
        fields = {name: {"from": before[key][name], "to": after[key][name]}
                  for name in (*LABEL_FIELDS, "parent", "position") if before[key][name] != after[key][name]}
        if fields:
            changed.append({"key": key, "fields": fields})
    low, high = sorted((from_number, to_number))
    between = (LabelMigration.objects.filter(to_version__project=project, to_version__number__gt=low,
                                             to_version__number__lte=high)
               .select_related("to_version", "from_version").order_by("to_version__number", "id"))
    return {
        "from": from_number,
        "to": to_number,
        "header": header,
        "added": [{"key": k, "name": after[k]["name"], "parent": after[k]["parent"]} for k in after if k not in before],
        "removed": [{"key": k, "name": before[k]["name"], "parent": before[k]["parent"]}
                    for k in before if k not in after],
        "changed": changed,
        "migrations": [{**_migration_dict(m), "from_version": m.from_version.number, "to_version": m.to_version.number}
                       for m in between],
    }


def draft_state(project: Project) -> dict[str, Any]:
    """The draft for the editor: its document and migrations, or (no draft yet) the current version's."""
    draft = TaxonomyVersion.objects.filter(project=project, status=TaxonomyVersion.Status.DRAFT).first()
    base = project.current_taxonomy_version
    if draft is None:
        return {
            "exists": False,
            "based_on": base.number if base else None,
            "document": version_document(base) if base else None,
            "migrations": [],
        }
    return {
        "exists": True,
        "based_on": draft.based_on.number if draft.based_on else None,
        "document": version_document(draft),
        "migrations": [_migration_dict(m) for m in LabelMigration.objects.filter(to_version=draft).order_by("id")],
    }


def guideline_rows(version: TaxonomyVersion) -> list[dict[str, Any]]:
    """Every label in tree order with its depth and rendered guideline, for the read-only guidelines page."""
    rows: list[dict[str, Any]] = []

    def walk(nodes: list[dict[str, Any]], depth: int) -> None:
        for node in nodes:
            rows.append({**{k: node[k] for k in LABEL_FIELDS}, "depth": depth,
                         "description_html": guideline_html(node["description"]),
                         "is_leaf": not node["children"]})
            walk(node["children"], depth + 1)

    walk(version_document(version)["labels"], 0)
    return rows
