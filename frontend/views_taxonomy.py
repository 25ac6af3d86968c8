"""Taxonomy pages: the draft editor (policy leads, admins), the version history with diffs, and guidelines.

- ``/projects/<slug>/taxonomy/`` the editor: a server-rendered shell; frontend/static/frontend/taxonomy.js
  drives the taxonomy API (draft, preview, publish, import, export) with the session cookie and the
  CSRF token from a meta tag. EDIT_TAXONOMY only: reviewers get 403, outsiders 404.
- ``/projects/<slug>/taxonomy/history/`` every published version, and a diff between any two (server-rendered).
- ``/projects/<slug>/guidelines/`` the guidelines, read-only, for every member (``?version=N``; ``?draft=1``
  lets an editor preview the saved draft). Guideline Markdown is rendered by
  ``labeling.selectors.taxonomy.guideline_html`` (markdown-it without raw HTML, then nh3); nothing else is
  rendered as HTML.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe

from labeling.models import Capability, Label, LabelMigration, Project, TaxonomyVersion, role_allows
from labeling.selectors import taxonomy as selectors
from labeling.services.errors import ServiceError
from labeling.services.taxonomy_io import MAX_DEPTH, MAX_GUIDELINE_CHARS, MAX_LABELS
from labeling.services.taxonomy_migrations import MAX_REQUEUE_PRIORITY

ACTIONS = ["remove", "age_restrict", "allow", "warn", "escalate", "limit_reach"]


def _project(request: HttpRequest, slug: str, capability: str) -> Any:
    return Project.objects.select_related("current_taxonomy_version").get_for(request.user, slug, capability)


def _links(project: Project, role: str) -> dict[str, str]:
    links = {
        "history": reverse("taxonomy-history", args=[project.slug]),
        "guidelines": reverse("guidelines", args=[project.slug]),
        "home": reverse("home"),
    }
    if role_allows(role, Capability.EDIT_TAXONOMY):
        links["editor"] = reverse("taxonomy-editor", args=[project.slug])
    if role_allows(role, Capability.LABEL):
        links["label"] = f"/projects/{project.slug}/label/"
    return links


@login_required
def taxonomy_editor(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.EDIT_TAXONOMY)
    base = project.current_taxonomy_version
    base_keys = list(Label.objects.filter(version=base).order_by("position", "id").values_list("key", flat=True)) \
        if base else []
    api = f"/api/projects/{project.slug}/taxonomy"
    config = {
        "slug": project.slug,
        "based_on": base.number if base else None,
        "base_keys": base_keys,
        "actions": ACTIONS,
        "limits": {"labels": MAX_LABELS, "depth": MAX_DEPTH, "guideline": MAX_GUIDELINE_CHARS,
                   "priority": MAX_REQUEUE_PRIORITY},
        "urls": {
            "draft": f"{api}/draft", "preview": f"{api}/draft/preview", "publish": f"{api}/draft/publish",
            "import": f"{api}/import", "export": f"{api}/export", "current": f"{api}/", "skos": f"{api}/skos",
            "draft_guidelines": reverse("guidelines", args=[project.slug]) + "?draft=1",
            "history": reverse("taxonomy-history", args=[project.slug]),
        },
    }
    return render(request, "frontend/taxonomy_editor.html", {
        "project": project, "version": base, "config": config, "links": _links(project, project.caller_role),
    })


def _version_choice(project: Project, raw: str | None, default: int | None) -> int | None:
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        return default


@login_required
def taxonomy_history(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.VIEW)
    history = selectors.version_history(project)
    numbers = [entry["number"] for entry in history]
    newest = numbers[0] if numbers else None
    default_from = numbers[1] if len(numbers) > 1 else newest
    diff_from = _version_choice(project, request.GET.get("from"), default_from)
    diff_to = _version_choice(project, request.GET.get("to"), newest)
    diff: dict[str, Any] | None = None
    diff_error = ""
    if diff_from is not None and diff_to is not None and diff_from != diff_to:
        try:
            diff = selectors.version_diff(project, diff_from, diff_to)
        except ServiceError as exc:
            diff_error = exc.message
    audit = list(
        project.audit_events.filter(action__in=["taxonomy.publish", "taxonomy.migrate", "taxonomy.draft_discard"])
        .select_related("actor").order_by("-id")[:50]
    )
    return render(request, "frontend/taxonomy_history.html", {
        "project": project, "history": history, "numbers": numbers, "diff": diff, "diff_error": diff_error,
        "diff_from": diff_from, "diff_to": diff_to, "audit": audit, "links": _links(project, project.caller_role),
    })


@login_required
def guidelines(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.VIEW)
    draft_requested = request.GET.get("draft") == "1"
    version: TaxonomyVersion | None
    if draft_requested:
        # The draft is work in progress: only editors see it.
        project = _project(request, slug, Capability.EDIT_TAXONOMY)
        version = TaxonomyVersion.objects.filter(project=project, status=TaxonomyVersion.Status.DRAFT).first()
        if version is None:
            raise Http404("there is no draft")
    elif request.GET.get("version"):
        try:
            version = selectors.version_get(project, int(request.GET["version"]))
        except (ValueError, ServiceError):
            raise Http404("no such version") from None
    else:
        version = project.current_taxonomy_version
    rows = selectors.guideline_rows(version) if version is not None else []
    for row in rows:
        # guideline_html's output is nh3-sanitised against a short allow-list: the one sanctioned HTML.
        row["description_html"] = mark_safe(row["description_html"])  # noqa: S308
    migrations = list(LabelMigration.objects.filter(to_version=version).order_by("id")) if version else []
    return render(request, "frontend/taxonomy_guidelines.html", {
        "project": project, "version": version, "rows": rows, "is_draft": draft_requested, "migrations": migrations,
        "links": _links(project, project.caller_role),
    })
