"""Page views: the project list and the keyboard-first labelling page.

Pages are server-rendered shells. The labelling page then talks to the JSON API
(queue/next, submit, skip, undo, renew, progress) from frontend/static/frontend/label.js
with the session cookie and the CSRF token rendered into the page, so there is one
code path for labels whether they come from the browser or a script.

Every project lookup goes through ``Project.objects.for_user`` / ``get_for`` (no IDOR):
a non-member gets 404, a member whose role may not label gets 403. Guidelines go through
``labeling.selectors.taxonomy.guideline_html``, the one Markdown renderer (markdown-it without raw
HTML, then nh3), so a guideline looks the same here as on the taxonomy pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from labeling.models import Annotation, Capability, ItemCount, Label, Project, Role, SelectionReason, role_allows
from labeling.selectors.taxonomy import guideline_html
from labeling.services.projects import project_creation_allowed
from learning.api import (
    EmbeddingState,
    EmbeddingStatus,
    active_model_staleness,
    embedding_status,
    project_embedding_status,
)

# --- Project list ----------------------------------------------------------------

HOME_REFRESH_SECONDS = 5
BUSY_STATES = (EmbeddingState.EMBEDDING, EmbeddingState.TRAINING)


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
    # Queue staleness: the model serving the queue, the labels it has not learnt yet, and its age.
    model_version: int | None = None
    labels_since: int = 0
    model_age: str = ""
    # Embedding progress and whether a model serves the queue yet (learning.api.embedding_status).
    embedding: EmbeddingStatus | None = None

    @property
    def open(self) -> int:
        return self.total - self.finished


def age_text(seconds: float) -> str:
    """A model's age as the card shows it: the two largest units, rounded down ("3 min", "2 h 5 min")."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        rest = minutes % 60
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    rest = hours % 24
    return f"{days} d {rest} h" if rest else f"{days} d"


# The project's other pages, each shown only to roles that may open it (the pages check again).
_PAGE_LINKS: tuple[tuple[str, str, str], ...] = (
    ("Guidelines", "guidelines", Capability.VIEW),
    ("Taxonomy", "taxonomy-editor", Capability.EDIT_TAXONOMY),
    ("Dashboard", "dashboard", Capability.VIEW_STATS),
    ("Adjudication", "adjudication", Capability.ADJUDICATE),
    ("Models", "models", Capability.VIEW_STATS),
    ("Import", "import", Capability.IMPORT),
    ("Export", "export", Capability.EXPORT),
    ("Members", "members", Capability.MANAGE),
    ("Settings", "settings", Capability.MANAGE),
)


def _page_links(slug: str, role: str) -> list[tuple[str, str]]:
    return [(title, reverse(name, args=[slug])) for title, name, capability in _PAGE_LINKS
            if role_allows(role, capability)]


def _start_of_today() -> datetime:
    now = timezone.localtime()
    return timezone.make_aware(datetime.combine(now.date(), time.min), now.tzinfo)


def project_rows_for(user: Any) -> list[ProjectRow]:
    """The caller's projects with role, progress and queue staleness, in a few queries and no scan of the pool.

    Item counts come from the maintained ledger (labeling/models/counters.py: a 1M-item project costs what
    a small one does), the caller's labels today from one grouped aggregate over their annotations since
    midnight, and staleness from the active models (one index range scan per project over the newer labels).
    Embedding progress is one count per project, cached for seconds (learning.services.embedding).
    """
    projects = list(
        Project.objects.for_user(user)
        .annotate(caller_role=F("memberships__role"))
        .order_by("name", "slug")
        .values("id", "slug", "name", "description", "caller_role", "embedder", "created_at")
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
    for project_id, counts in ItemCount.objects.counts(rows.keys()).items():
        rows[project_id].total = counts.items
        rows[project_id].finished = counts.finished
    for project_id, staleness in active_model_staleness(rows.keys()).items():
        rows[project_id].model_version = staleness.version
        rows[project_id].labels_since = staleness.labels_since
        rows[project_id].model_age = age_text(staleness.age_seconds)
    versions = {pid: row.model_version for pid, row in rows.items() if row.model_version is not None}
    totals = {project_id: row.total for project_id, row in rows.items()}
    for project_id, status in embedding_status(
            [(p["id"], p["embedder"], p["created_at"]) for p in projects], versions, totals).items():
        rows[project_id].embedding = status
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
    rows = project_rows_for(request.user)
    # While a project is embedding or waiting for its first model, the page reloads itself to show progress.
    busy = any(row.embedding is not None and row.embedding.state in BUSY_STATES for row in rows)
    return render(request, "frontend/home.html",
                  {"projects": rows, "refresh_seconds": HOME_REFRESH_SECONDS if busy else None,
                   "can_create": project_creation_allowed(request.user)})


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
            "embedding": f"/api/projects/{project.slug}/embedding/",
            "lease": "/api/leases/",
            "login": reverse("login"),
            "home": reverse("home"),
        },
    }
    embedding = project_embedding_status(project)
    context = {
        "project": project,
        "embedding": embedding,
        "version": version,
        "tree": tree,
        "labels_flat": flat,
        "config": config,
        "undo_seconds": settings.SIFT_UNDO_SECONDS,
        # The audited reveal of masked PII (frontend/static/frontend/reveal.js, labeling/services/privacy.py).
        "can_reveal": project.mask_pii and role_allows(project.caller_role, Capability.REVEAL_PII),
    }
    return render(request, "frontend/label.html", context)
