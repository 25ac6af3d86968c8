"""Page views: the project list and the keyboard-first labelling page.

Pages are server-rendered shells. The labelling page then talks to the JSON API
(queue/next, submit, skip, undo, renew, progress) from frontend/static/frontend/label.js
with the session cookie and the CSRF token rendered into the page, so there is one
code path for labels whether they come from the browser or a script.

Every project lookup goes through ``Project.objects.for_user`` / ``get_for`` (no IDOR):
a non-member gets 404, a member whose role may not label gets 403. Guidelines go through
``labeling.selectors_taxonomy.guideline_html``, the one Markdown renderer (markdown-it without raw
HTML, then nh3), so a guideline looks the same here as on the taxonomy pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from labeling.models import Annotation, Capability, Item, Label, Project, Role, SelectionReason, role_allows
from labeling.selectors_taxonomy import guideline_html

# --- Project list ----------------------------------------------------------------


@dataclass
class ProjectRow:
    slug: str
    name: str
    description: str
    role: str
    role_display: str
    can_label: bool
    links: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    finished: int = 0
    mine_today: int = 0

    @property
    def open(self) -> int:
        return self.total - self.finished


# The project's other pages, each shown only to roles that may open it (the pages check again).
_PAGE_LINKS: tuple[tuple[str, str, str], ...] = (
    ("Guidelines", "guidelines", Capability.VIEW),
    ("Taxonomy", "taxonomy-editor", Capability.EDIT_TAXONOMY),
    ("Dashboard", "dashboard", Capability.VIEW_STATS),
    ("Adjudication", "adjudication", Capability.ADJUDICATE),
)


def _page_links(slug: str, role: str) -> list[tuple[str, str]]:
    return [(title, reverse(name, args=[slug])) for title, name, capability in _PAGE_LINKS
            if role_allows(role, capability)]


def _start_of_today() -> datetime:
    now = timezone.localtime()
    return timezone.make_aware(datetime.combine(now.date(), time.min), now.tzinfo)


def project_rows_for(user: Any) -> list[ProjectRow]:
    """The caller's projects with role and progress, in three queries however many projects there are.

    One grouped aggregate over the items of all the caller's projects (not one COUNT
    per project) and one over the caller's annotations since midnight. At a million
    items the item aggregate is still a scan of those projects' rows; when that
    shows up in profiles the counts belong in a per-project counter table.
    """
    projects = list(
        Project.objects.for_user(user)
        .annotate(caller_role=F("memberships__role"))
        .order_by("name", "slug")
        .values("id", "slug", "name", "description", "caller_role")
    )
    role_names = dict(Role.choices)
    rows: dict[int, ProjectRow] = {
        p["id"]: ProjectRow(
            slug=p["slug"], name=p["name"], description=p["description"], role=p["caller_role"],
            role_display=role_names.get(p["caller_role"], p["caller_role"]),
            can_label=role_allows(p["caller_role"], Capability.LABEL),
            links=_page_links(p["slug"], p["caller_role"]),
        )
        for p in projects
    }
    if not rows:
        return []
    item_counts = (
        Item.objects.filter(project_id__in=rows.keys())
        .values("project_id")
        .annotate(total=Count("id"), finished=Count("id", filter=Q(n_done__gte=F("n_required"))))
    )
    for entry in item_counts:
        rows[entry["project_id"]].total = entry["total"]
        rows[entry["project_id"]].finished = entry["finished"]
    mine = (
        Annotation.objects.filter(project_id__in=rows.keys(), reviewer=user, created_at__gte=_start_of_today())
        .values("project_id")
        .annotate(n=Count("id"))
    )
    for entry in mine:
        rows[entry["project_id"]].mine_today = entry["n"]
    return list(rows.values())


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/home.html", {"projects": project_rows_for(request.user)})


# --- Labelling page --------------------------------------------------------------


@dataclass
class LabelNode:
    """One taxonomy label as the page shows it: its hotkey among its siblings, its guideline, its children."""

    key: str
    name: str
    index: int
    hotkey: str
    guideline: str
    severity: int
    action: str
    positive_examples: list[str]
    negative_examples: list[str]
    children: list[LabelNode] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "children": [c.as_json() for c in self.children]}


def _label_tree(version_id: int) -> tuple[list[LabelNode], list[LabelNode]]:
    """The version's labels as a tree (deprecated ones left out) and as a flat, depth-first list."""
    labels = list(
        Label.objects.filter(version_id=version_id, deprecated=False)
        .order_by("position", "id")
        .values("id", "key", "name", "description", "parent_id", "severity", "action",
                "positive_examples", "negative_examples")
    )
    by_parent: dict[int | None, list[Any]] = {}
    for row in labels:
        by_parent.setdefault(row["parent_id"], []).append(row)
    flat: list[LabelNode] = []

    def build(parent_id: int | None) -> list[LabelNode]:
        nodes = []
        for position, row in enumerate(by_parent.get(parent_id, []), start=1):
            node = LabelNode(
                key=row["key"], name=row["name"], index=len(flat), hotkey=str(position) if position <= 9 else "",
                guideline=guideline_html(row["description"]), severity=row["severity"], action=row["action"],
                positive_examples=list(row["positive_examples"] or []),
                negative_examples=list(row["negative_examples"] or []),
            )
            flat.append(node)
            node.children = build(row["id"])
            nodes.append(node)
        return nodes

    # Depth is bounded by the taxonomy parser (MAX_DEPTH), so this recursion is shallow.
    return build(None), flat


@login_required
def label(request: HttpRequest, slug: str) -> HttpResponse:
    project = Project.objects.get_for(request.user, slug, Capability.LABEL)
    version = project.current_taxonomy_version
    tree: list[LabelNode] = []
    flat: list[LabelNode] = []
    if version is not None:
        tree, flat = _label_tree(version.pk)
    config = {
        "slug": project.slug,
        "taxonomy_version": version.number if version is not None else None,
        "multi_label": bool(version and version.multi_label),
        "allow_non_leaf": bool(version and version.allow_non_leaf),
        "undo_seconds": settings.SIFT_UNDO_SECONDS,
        "lease_seconds": project.lease_seconds,
        "tree": [node.as_json() for node in tree],
        "reasons": dict(SelectionReason.choices),
        "urls": {
            "next": f"/api/projects/{project.slug}/queue/next",
            "progress": f"/api/projects/{project.slug}/progress",
            "lease": "/api/leases/",
            "login": reverse("login"),
            "home": reverse("home"),
        },
    }
    context = {
        "project": project,
        "version": version,
        "tree": tree,
        "labels_flat": flat,
        "config": config,
        "undo_seconds": settings.SIFT_UNDO_SECONDS,
    }
    return render(request, "frontend/label.html", context)
