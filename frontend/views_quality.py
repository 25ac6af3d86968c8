"""Quality pages: the project dashboard (charts) and the adjudication queue.

- ``/projects/<slug>/dashboard/`` a server-rendered shell; frontend/static/frontend/dashboard.js fetches the
  same JSON the API exposes (``/api/projects/<slug>/stats/...`` and ``/models/``) with the session cookie and
  draws the charts with Chart.js in the browser. VIEW_STATS only: reviewers get 403, outsiders 404.
- ``/projects/<slug>/adjudication/`` the pending adjudications with every answer and comment, one form per
  item; the POST calls ``adjudication_decide`` and redirects back (post/redirect/get). ADJUDICATE only.
- ``/projects/<slug>/items/<id>/history/`` one item's every answer, in order, with comments, and its
  adjudication state; ``/projects/<slug>/items/history/?external_id=X`` finds it by external id. ADJUDICATE
  only, like the adjudication queue: a reviewer must not see other reviewers' answers.

No user text is ever rendered as HTML: templates auto-escape, and the dashboard script writes with
``textContent`` only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from frontend.views import age_text
from labeling.models import Capability, Label, Project, role_allows
from labeling.selectors.adjudication import adjudication_list
from labeling.selectors.history import item_find
from labeling.selectors.history import item_history as item_history_read
from labeling.services.adjudication import adjudication_decide
from labeling.services.clusters import flood_alerts
from labeling.services.errors import ServiceError
from labeling.services.wellness import exposure_by_day, wellness_policy
from learning.api import active_model_staleness

PAGE_SIZE = 25


def _project(request: HttpRequest, slug: str, capability: str) -> Project:
    project: Project = Project.objects.select_related("current_taxonomy_version").get_for(
        request.user, slug, capability)
    return project


def _links(project: Project) -> dict[str, str]:
    role = getattr(project, "caller_role", "")
    links = {"home": reverse("home"), "dashboard": reverse("dashboard", args=[project.slug])}
    if role_allows(role, Capability.ADJUDICATE):
        links["adjudication"] = reverse("adjudication", args=[project.slug])
        links["history_lookup"] = reverse("item-history-lookup", args=[project.slug])
    if role_allows(role, Capability.LABEL):
        links["label"] = reverse("label", args=[project.slug])
    return links


@login_required
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.VIEW_STATS)
    api = f"/api/projects/{project.slug}"
    config = {
        "slug": project.slug,
        "urls": {
            "summary": f"{api}/stats/", "agreement": f"{api}/stats/agreement", "reviewers": f"{api}/stats/reviewers",
            "languages": f"{api}/languages/",
            "prevalence": f"{api}/stats/prevalence", "queue": f"{api}/stats/queue-health",
            "timeline": f"{api}/stats/timeline", "models": f"{api}/models/",
            "adjudication": _links(project).get("adjudication"),
            "label_errors": f"{api}/label-errors/?limit=20",
            # An item's history page, for leads who may open it (the panel links each suspected item there).
            "history": (reverse("item-history-lookup", args=[project.slug])
                        if "history_lookup" in _links(project) else None),
        },
    }
    staleness = active_model_staleness([project.pk]).get(project.pk)
    return render(request, "frontend/dashboard.html", {
        "project": project, "config": config, "links": _links(project), "staleness": staleness,
        "model_age": age_text(staleness.age_seconds) if staleness else "",
        # Reviewer wellness: severe items per reviewer per day (labeling/services/wellness.py).
        "exposure": exposure_by_day(project=project), "wellness": wellness_policy(project),
        # Campaigns: clusters that grew past SIFT_FLOOD_THRESHOLD within the hour (labeling/services/clusters.py).
        "floods": flood_alerts(project=project),
        "label_errors_min": settings.SIFT_LABEL_ERRORS_MIN_LABELS})


def _choices(project: Project) -> list[dict[str, Any]]:
    """The labels a decision may use: the current version's non-deprecated leaves (or all, if allowed)."""
    version = project.current_taxonomy_version
    if version is None:
        return []
    rows = list(Label.objects.filter(version=version, deprecated=False).order_by("position", "id")
                .values("id", "key", "name", "parent_id", "severity"))
    parents = {row["parent_id"] for row in rows if row["parent_id"]}
    names = {row["id"]: row["name"] for row in rows}
    return [
        {"key": row["key"], "name": row["name"], "parent": names.get(row["parent_id"], ""), "severity": row["severity"]}
        for row in rows if version.allow_non_leaf or row["id"] not in parents
    ]


@login_required
@require_http_methods(["GET", "POST"])
def adjudication(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug, Capability.ADJUDICATE)
    here = reverse("adjudication", args=[project.slug])
    if request.method == "POST":
        try:
            adjudication_id = int(request.POST.get("adjudication", ""))
        except ValueError:
            messages.error(request, "That form did not name an adjudication.")
            return HttpResponseRedirect(here)
        try:
            outcome = adjudication_decide(
                actor=request.user, project=project, adjudication_id=adjudication_id,  # type: ignore[arg-type]
                labels=request.POST.getlist("labels"), note=request.POST.get("note", ""),
                revise=request.POST.get("revise") == "1")
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Decided {outcome.item.external_id}: {', '.join(outcome.labels or [])}.")
        return HttpResponseRedirect(here)
    pending = adjudication_list(project, state="pending", limit=PAGE_SIZE)
    decided = adjudication_list(project, state="decided", limit=10)
    version = project.current_taxonomy_version
    return render(request, "frontend/adjudication.html", {
        "project": project, "links": _links(project), "pending": pending, "decided": decided,
        "choices": _choices(project), "multi_label": bool(version and version.multi_label),
    })


@login_required
def item_history(request: HttpRequest, slug: str, item_id: int) -> HttpResponse:
    project = _project(request, slug, Capability.ADJUDICATE)
    item = item_find(project, item_id=item_id)
    if item is None:
        raise Http404("no such item in this project")
    history = item_history_read(project, item)
    return render(request, "frontend/item_history.html", {
        "project": project, "links": _links(project), "history": history, "item": history["item"],
        "answers": history["answers"], "adjudication": history["adjudication"],
        "lookup": reverse("item-history-lookup", args=[project.slug]),
    })


@login_required
def item_history_lookup(request: HttpRequest, slug: str) -> HttpResponse:
    """The lookup form's target: by external id (or a numeric item id), then to the item's history page."""
    project = _project(request, slug, Capability.ADJUDICATE)
    wanted = request.GET.get("external_id", "").strip()
    item = item_find(project, external_id=wanted) if wanted else None
    if item is None and wanted.isdigit():
        item = item_find(project, item_id=int(wanted))
    if item is None:
        if wanted:
            messages.error(request, f"No item {wanted!r} in this project.")
        return HttpResponseRedirect(reverse("adjudication", args=[project.slug]))
    return HttpResponseRedirect(reverse("item-history", args=[project.slug, item.pk]))
