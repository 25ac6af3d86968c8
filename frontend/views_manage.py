"""Pages that run a project: new project, members, import (with a worker and a progress bar), export, models.

- ``/projects/new/`` project creators only (``project_creation_allowed``): name, slug, taxonomy (typed JSON, an
  uploaded JSON file, or a copy of the published version of one of your projects), overlap, strategy, embedder,
  gold rate, suggestions, seed queries. Calls ``project_create``; the creator becomes the project's admin.
- ``/projects/<slug>/members/`` MANAGE: add an existing user or create one with a role, change a role, remove a
  member (``membership_add`` / ``membership_remove``: audited; removal releases the member's open leases).
- ``/projects/<slug>/import/`` IMPORT: upload JSON Lines, CSV or Parquet (``.gz`` too; gold or not). The file is
  stored and imported by a worker (labeling/services/import_jobs.py); the page lists the jobs with a progress bar
  that frontend/static/frontend/imports.js refreshes from ``GET /api/projects/<slug>/imports/<id>/`` (state is in
  the database, so a reload shows the same) and a CSV of each job's per-line errors.
- ``/projects/<slug>/export/`` EXPORT: the parameters of ``GET /api/projects/<slug>/export`` as a form that
  downloads at once, or requests a named snapshot; the snapshot list with status, size, sha256, dataset card,
  download and retry. Leads and admins also get the item-history lookup here.
- ``/projects/<slug>/models/`` VIEW_STATS: model versions (when, labels used, metrics, timings), the learning
  curve (an inline SVG drawn here, no script), what each version's ranking handed out and why (leases per
  selection reason), and the queue's staleness now.

Non-members get 404 and members without the capability 403, through ``Project.objects.get_for`` as everywhere.
Business rules live in the services; these views parse forms, call one service, and redirect (post/redirect/get).
No user text is rendered as HTML: templates auto-escape.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from frontend.views import age_text
from labeling.models import (
    Capability,
    ExportSnapshot,
    ImportJob,
    Lease,
    Membership,
    Project,
    Role,
    SelectionReason,
    role_allows,
)
from labeling.selectors.taxonomy import version_document
from labeling.services.errors import ServiceError
from labeling.services.exports import (
    AGGREGATIONS,
    FORMATS,
    export_params_parse,
    export_snapshot_request,
    export_snapshot_retry,
)
from labeling.services.import_jobs import import_job_create
from labeling.services.projects import (
    KNOWN_STRATEGIES,
    SETTINGS_FIXED,
    membership_add,
    membership_remove,
    project_create,
    project_creation_allowed,
    project_embedder_choices,
    project_settings_update,
)
from labeling.services.reviewer_languages import membership_set_languages
from learning.api import active_model_staleness
from learning.models import ModelVersion

JOBS_SHOWN = 20
SNAPSHOTS_SHOWN = 50
MODELS_SHOWN = 50
STARTER_TAXONOMY = {"name": "My policy", "multi_label": False, "labels": [
    {"key": "violating", "name": "Violating", "description": "Breaks the policy."},
    {"key": "ok", "name": "Not violating", "description": "Everything else."}]}


def _project(request: HttpRequest, slug: str, capability: str) -> Project:
    project: Project = Project.objects.select_related("current_taxonomy_version").get_for(
        request.user, slug, capability)
    return project


def project_nav(project: Project) -> list[tuple[str, str]]:
    """The project's pages the caller's role may open, for the pages' navigation."""
    role = getattr(project, "caller_role", "")
    pages = (("Dashboard", "dashboard", Capability.VIEW_STATS), ("Models", "models", Capability.VIEW_STATS),
             ("Import", "import", Capability.IMPORT), ("Export", "export", Capability.EXPORT),
             ("Members", "members", Capability.MANAGE), ("Settings", "settings", Capability.MANAGE),
             ("Adjudication", "adjudication", Capability.ADJUDICATE),
             ("Label", "label", Capability.LABEL))
    return [(title, reverse(name, args=[project.slug])) for title, name, capability in pages
            if role_allows(role, capability)]


def _context(project: Project, **extra: Any) -> dict[str, Any]:
    return {"project": project, "nav": project_nav(project), "home": reverse("home"), **extra}


# --- New project ----------------------------------------------------------------------------------------------


def _copyable(user: Any) -> list[Project]:
    """Projects whose published taxonomy the caller may copy: their own, with a current version."""
    return list(Project.objects.for_user(user).filter(current_taxonomy_version__isnull=False)
                .select_related("current_taxonomy_version").order_by("name"))


def _taxonomy_from_form(request: HttpRequest, copyable: list[Project]) -> Any:
    source = request.POST.get("taxonomy_source", "editor")
    if source == "upload":
        upload = request.FILES.get("taxonomy_file")
        if upload is None:
            raise ServiceError("taxonomy: choose a JSON file to upload")
        raw = upload.read(2 * 1024 * 1024 + 1)
        if len(raw) > 2 * 1024 * 1024:
            raise ServiceError("taxonomy: the file is larger than 2 MB")
        text = raw.decode("utf-8", "replace")
    elif source == "copy":
        wanted = request.POST.get("copy_from", "")
        match = next((p for p in copyable if p.slug == wanted), None)
        if match is None or match.current_taxonomy_version is None:
            raise ServiceError("taxonomy: choose one of your projects to copy from")
        return version_document(match.current_taxonomy_version)
    else:
        text = request.POST.get("taxonomy_json", "")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ServiceError(f"taxonomy: not valid JSON ({exc})") from exc


def _float(request: HttpRequest, name: str, default: float) -> float:
    raw = request.POST.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ServiceError(f"{name.replace('_', ' ')}: must be a number") from exc


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    if not project_creation_allowed(request.user):
        raise DjangoPermissionDenied("you may not create projects; ask a Sift administrator")
    copyable = _copyable(request.user)
    form: dict[str, Any] = {
            "name": "", "slug": "", "overlap": "1", "strategy": "default", "embedder": "minilm", "gold_rate": "0",
            "show_suggestions": True, "seed_queries": "", "taxonomy_source": "editor",
            "taxonomy_json": json.dumps(STARTER_TAXONOMY, indent=2), "copy_from": ""}
    if request.method == "POST":
        form.update({key: request.POST.get(key, "") for key in form if key != "show_suggestions"})
        form["show_suggestions"] = request.POST.get("show_suggestions") == "on"
        try:
            taxonomy = _taxonomy_from_form(request, copyable)
            gold_rate = _float(request, "gold_rate", 0.0)
            if not 0 <= gold_rate <= 0.5:
                raise ServiceError("gold rate: must be between 0 and 0.5")
            try:
                overlap = int(form["overlap"])
            except ValueError as exc:
                raise ServiceError("overlap: must be a whole number") from exc
            seeds = [line.strip() for line in str(form["seed_queries"]).splitlines() if line.strip()]
            project = project_create(
                actor=request.user, slug=str(form["slug"]).strip(), name=str(form["name"]).strip(),
                taxonomy=taxonomy, overlap=overlap, strategy=str(form["strategy"]),
                embedder=str(form["embedder"]), gold_rate=gold_rate,
                show_suggestions=bool(form["show_suggestions"]), seed_queries=seeds)
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Created {project.name}. Add its members, then import its items.")
            return HttpResponseRedirect(reverse("members", args=[project.slug]))
    return render(request, "frontend/project_new.html", {
        "form": form, "copyable": copyable, "strategies": KNOWN_STRATEGIES, "embedders": project_embedder_choices(),
        "home": reverse("home")})


# --- Settings -------------------------------------------------------------------------------------------------


def _settings_from_form(request: HttpRequest) -> dict[str, Any]:
    def number(name: str, kind: type) -> Any:
        raw = request.POST.get(name, "").strip()
        try:
            return kind(raw)
        except ValueError as exc:
            raise ServiceError(f"{name.replace('_', ' ')}: must be a number") from exc

    return {
        "name": request.POST.get("name", "").strip(), "description": request.POST.get("description", "").strip(),
        "strategy": request.POST.get("strategy", ""), "exploration_rate": number("exploration_rate", float),
        "gold_rate": number("gold_rate", float), "show_suggestions": request.POST.get("show_suggestions") == "on",
        "suggestion_holdout_rate": number("suggestion_holdout_rate", float),
        "lease_seconds": number("lease_seconds", int),
        "seed_queries": [line.strip() for line in request.POST.get("seed_queries", "").splitlines() if line.strip()],
    }


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.MANAGE)
    here = reverse("settings", args=[project.slug])
    if request.method == "POST":
        try:
            changed = project_settings_update(actor=request.user, project=project, changes=_settings_from_form(request))
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Saved: {', '.join(changed)}." if changed else "Nothing changed.")
        return HttpResponseRedirect(here)
    version = project.current_taxonomy_version
    fixed = [("Slug", project.slug, SETTINGS_FIXED["slug"]), ("Overlap", project.overlap, SETTINGS_FIXED["overlap"]),
             ("Embedder", project.embedder, SETTINGS_FIXED["embedder"]),
             ("Taxonomy", f"v{version.number}" if version else "none", SETTINGS_FIXED["taxonomy"])]
    return render(request, "frontend/settings.html", _context(
        project, strategies=KNOWN_STRATEGIES, fixed=fixed, seeds="\n".join(project.seed_queries or []),
        taxonomy_url=reverse("taxonomy-editor", args=[project.slug])))


# --- Members --------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.MANAGE)
    here = reverse("members", args=[project.slug])
    if request.method == "POST":
        action = request.POST.get("action", "")
        username = request.POST.get("username", "").strip()
        try:
            if action == "remove":
                membership_remove(actor=request.user, project=project, username=username)
                messages.success(request, f"Removed {username}; their open items went back to the queue.")
            elif action in ("add", "role"):
                create = action == "add" and request.POST.get("create") == "on"
                membership_add(actor=request.user, project=project, username=username,
                               role=request.POST.get("role", ""), create_user=create,
                               password=request.POST.get("password") or None if create else None)
                messages.success(request, f"{username} is now {dict(Role.choices).get(request.POST['role'], '')}.")
            elif action == "languages":
                membership = membership_set_languages(actor=request.user, project=project, username=username,
                                                      languages=request.POST.get("languages", ""))
                messages.success(request, f"{username} reviews {', '.join(membership.languages) or 'every language'}.")
            elif action == "language_mode":
                project_settings_update(actor=request.user, project=project,
                                        changes={"language_mode": request.POST.get("language_mode", "")})
                messages.success(request, "The queue's use of reviewer languages is saved.")
            else:
                messages.error(request, "That form did not say what to do.")
        except ServiceError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(here)
    rows = list(Membership.objects.filter(project=project).select_related("user").order_by("user__username"))
    open_leases = dict(Lease.objects.filter(project=project, state=Lease.State.ACTIVE)
                       .values_list("reviewer_id").annotate(n=Count("id")))
    answers = dict(project.annotations.values_list("reviewer_id").annotate(n=Count("id")))
    table = [{"username": m.user.username, "role": m.role, "since": m.created_at, "open": open_leases.get(m.user_id, 0),
              "answers": answers.get(m.user_id, 0), "me": m.user_id == request.user.pk, "languages": m.languages}
             for m in rows]
    return render(request, "frontend/members.html", _context(project, members=table, roles=Role.choices,
                                                             language_modes=Project.LanguageMode.choices))


# --- Import ---------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.IMPORT)
    here = reverse("import", args=[project.slug])
    if request.method == "POST":
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise ServiceError("file: choose a file to import")
            job = import_job_create(actor=request.user, project=project, upload=upload,
                                    gold=request.POST.get("gold") == "on")
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Importing {job.filename}: the progress shows below.")
        return HttpResponseRedirect(here)
    jobs = list(ImportJob.objects.filter(project=project).select_related("created_by").order_by("-id")[:JOBS_SHOWN])
    config = {"status_url": f"/api/projects/{project.slug}/imports/"}
    return render(request, "frontend/import.html", _context(project, jobs=jobs, config=config))


# --- Export ---------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def export_page(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.EXPORT)
    here = reverse("export", args=[project.slug])
    if request.method == "POST":
        try:
            action = request.POST.get("action", "")
            fields = {key: [value] for key, value in request.POST.items()
                      if key not in ("csrfmiddlewaretoken", "action", "name") and value != ""}
            if action == "retry":
                export_snapshot_retry(project=project, actor=request.user, name=request.POST.get("name", ""))
                messages.success(request, f"Snapshot {request.POST.get('name')} is queued again.")
            elif action == "download":
                export_params_parse(fields)  # a bad parameter is said here, on the page, not as a JSON 400
                query = urlencode({key: values[0] for key, values in fields.items()})
                return HttpResponseRedirect(f"/api/projects/{project.slug}/export?{query}")
            else:
                params = export_params_parse(fields)
                snapshot = export_snapshot_request(project=project, actor=request.user,
                                                   name=request.POST.get("name", "").strip(), params=params)
                messages.success(request, f"Snapshot {snapshot.name} is queued; its status shows below.")
        except ServiceError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(here)
    snapshots = list(ExportSnapshot.objects.filter(project=project).select_related("created_by")
                     .order_by("-id")[:SNAPSHOTS_SHOWN])
    role = getattr(project, "caller_role", "")
    return render(request, "frontend/export.html", _context(
        project, snapshots=snapshots, formats=FORMATS, aggregations=AGGREGATIONS,
        history_lookup=(reverse("item-history-lookup", args=[project.slug])
                        if role_allows(role, Capability.ADJUDICATE) else None)))


# --- Models ---------------------------------------------------------------------------------------------------


def _curve(points: list[tuple[int, float]], width: int = 560, height: int = 160) -> dict[str, Any] | None:
    """An SVG polyline of (labels, score) points, scaled into the box; None with fewer than two points."""
    if len(points) < 2:
        return None
    xs = [x for x, _ in points]
    low, high = min(xs), max(xs)
    span = (high - low) or 1

    def place(x: int, y: float) -> str:
        return f"{8 + (width - 16) * (x - low) / span:.1f},{height - 8 - (height - 16) * max(0.0, min(1.0, y)):.1f}"

    return {"width": width, "height": height, "points": " ".join(place(x, y) for x, y in points),
            "first": low, "last": high}


@login_required
def models_page(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.VIEW_STATS)
    rows = (ModelVersion.objects.filter(project=project).order_by("-version")
                    .values("version", "created_at", "activated_at", "n_labels", "status", "metrics", "timings",
                            "strategy", "embedder", "cold_start", "n_pool", "n_ranked", "error")[:MODELS_SHOWN])
    versions: list[dict[str, Any]] = [dict(row) for row in rows]
    shown = [v["version"] for v in versions]
    reasons: dict[int, dict[str, int]] = {}
    for version, reason, n in (Lease.objects.filter(project=project, model_version__in=shown)
                               .values_list("model_version", "selection_reason").annotate(n=Count("id"))):
        reasons.setdefault(version, {})[reason] = n
    names = dict(SelectionReason.choices)
    for row in versions:
        row["reasons"] = sorted(((names.get(k, k), n) for k, n in reasons.get(row["version"], {}).items()),
                                key=lambda pair: -pair[1])
        metrics = row["metrics"] or {}
        # learning/services/evaluation.py: {"cv": {...}, "exploration": {...}, "class_counts": {...}}
        row["cv"] = metrics.get("cv") or {}
        row["exploration"] = metrics.get("exploration") or {}
        row["class_counts"] = metrics.get("class_counts") or {}
        row["score"] = row["cv"].get("average_precision", row["cv"].get("macro_f1"))
    curve_points = [(v["n_labels"], float(v["score"])) for v in reversed(versions)
                    if isinstance(v["score"], int | float)]
    staleness = active_model_staleness([project.pk]).get(project.pk)
    return render(request, "frontend/models.html", _context(
        project, versions=versions, curve=_curve(curve_points), staleness=staleness,
        model_age=age_text(staleness.age_seconds) if staleness else ""))
