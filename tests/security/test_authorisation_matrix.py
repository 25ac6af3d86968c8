"""The authorisation matrix: every /api/ route and method, for every role, an outsider and an anonymous caller.

The expected status comes from one rule per row (``ROLE_CAPABILITIES`` decides who holds a capability):

- anonymous: 401 (public rows: their success code);
- a member of another project (the outsider): 404, so a project's existence never leaks;
- a member whose role lacks the row's capability: 403;
- a member holding it: the row's success code (with a request that is valid for the row).
- lease rows: only the holder succeeds; another member of the project gets 403, the outsider 404.

Every request runs in a savepoint that is rolled back afterwards, so each cell sees the same seeded world. On
every denied request the test also checks that nothing changed (row counts of every labeling, learning and auth
table, plus the lease, annotation, adjudication and project state) and that the answer carries none of the
project's data. ``test_matrix_covers_every_api_route`` walks Django's URL resolver: a new endpoint (or a new
method on one) without a row here fails. The project pages follow the same rule (an anonymous visitor is
redirected to the login page instead of a 401), and their route list is checked against the resolver too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from labeling.models import ROLE_CAPABILITIES, Capability, ExportSnapshot, ImportJob, Item, SuspectedError
from labeling.services.annotations import annotation_submit
from labeling.services.taxonomy import taxonomy_draft_save
from tests.security.support import PASSWORD, ROLES, World, plain_text, seed_world, table_fingerprint

PUBLIC = "public"  # no credentials needed
AUTHENTICATED = "authenticated"  # any signed-in user; scoped to their own projects by the view
CREATOR = "creator"  # users allowed to create projects (SIFT_PROJECT_CREATORS); seed_world grants it to "admin"
CREATORS = ("admin",)
IDENTITIES = ("anonymous", "outsider", *ROLES)
LEASE_HOLDER = "reviewer"
# Strings only project sms holds (tests/security/support.py writes them): none may reach a non-member.
SMS_MARKERS = ("item.text", "item.meta", "comment ", "project.name", "project.description", "label.name",
               "label.description", "adjudication.note", "taxonomy.name", "first-snapshot")

Setup = Callable[[World], dict[str, Any]]


def _no_setup(world: World) -> dict[str, Any]:
    return {}


def _draft(world: World) -> dict[str, Any]:
    document = {"name": "Draft", "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"},
                                            {"key": "abuse", "name": "Abuse", "children": [
                                                {"key": "threat", "name": "Threat"}, {"key": "slur", "name": "Slur"}]},
                                            {"key": "scam", "name": "Scam"}, {"key": "new", "name": "New"}]}
    taxonomy_draft_save(actor=world.users["policy_lead"], project=world.project, document=document)
    return {}


def _submitted_now(world: World) -> dict[str, Any]:
    """The holder submits their active lease just now, so the undo window is open whatever the box's speed."""
    lease_id = world.active_leases[LEASE_HOLDER]
    annotation_submit(lease_id=lease_id, reviewer=world.users[LEASE_HOLDER], labels=["ham"])
    return {"lease": lease_id}


def _item_without_adjudication(world: World) -> dict[str, Any]:
    external_id = (Item.objects.filter(project=world.project, adjudication__isnull=True).order_by("-id")
                   .values_list("external_id", flat=True).first())
    return {"body": {"external_id": external_id, "note": "sent by hand"}}


def _suspected_error(world: World) -> dict[str, Any]:
    item = Item.objects.filter(project=world.project).order_by("id").first()
    assert item is not None
    SuspectedError.objects.create(project=world.project, item=item, given_label="ham", suggested_label="spam",
                                  self_confidence=0.05, rank=0, model_version=1)
    return {}


def _some_item(world: World) -> dict[str, Any]:
    item = Item.objects.filter(project=world.project).order_by("id").values("id", "external_id").first()
    assert item is not None
    return {"item": item["id"], "body": {"external_ids": [item["external_id"]], "reason": "matrix"}}


def _some_item_ref(world: World) -> dict[str, Any]:
    item = Item.objects.filter(project=world.project).order_by("id").values("id", "external_id").first()
    assert item is not None
    return {"item": item["id"], "external_id": item["external_id"]}


def _item_with_image(world: World) -> dict[str, Any]:
    from labeling.services.images import image_derive, item_image_attach
    from tests.image_samples import photo

    item = Item.objects.filter(project=world.project).order_by("id").first()
    assert item is not None
    item_image_attach(item=item, derived=image_derive(photo(64, 48), max_bytes=1 << 20), source_name="a.jpg",
                      original=None)
    return {"item": item.pk}


def _heartbeat(world: World) -> dict[str, Any]:
    from learning.jobs import worker_heartbeat

    worker_heartbeat(worker="matrix@test")
    return {}


def _failed_snapshot(world: World) -> dict[str, Any]:
    ExportSnapshot.objects.create(project=world.project, name="matrix-failed", format="csv", params={"format": "csv"},
                                  status=ExportSnapshot.Status.FAILED, error="disk full")
    return {"snapshot": "matrix-failed"}


def _import_job(world: World) -> dict[str, Any]:
    job = ImportJob.objects.create(project=world.project, filename="matrix.csv", status=ImportJob.Status.DONE,
                                   created=1, error_count=1, errors=[{"line": 3, "error": "text: required"}])
    return {"job": job.pk}


def _bank(world: World) -> dict[str, Any]:
    """A bank with one confirmed item (the project clustered first: confirming needs the item's signature)."""
    from labeling.services.banks import bank_confirm, bank_create, bank_export
    from learning.services.clusters import project_cluster_items

    project_cluster_items(project_id=world.project.pk)
    lead = world.users["policy_lead"]
    bank = bank_create(actor=lead, project=world.project, name="matrix-bank", label_key="spam")
    item = Item.objects.filter(project=world.project).order_by("id").values_list("id", flat=True).first()
    assert item is not None
    entry = bank_confirm(actor=lead, bank=bank, item_ids=[item])["entries"][0]
    document = bank_export(actor=lead, bank=bank) | {"name": "matrix-imported"}
    return {"bank": bank.pk, "entry": entry, "item": item, "document": document}


def _bank_confirm(world: World) -> dict[str, Any]:
    made = _bank(world)
    return made | {"body": {"items": [made["item"]], "with_cluster": True}}


def _bank_import(world: World) -> dict[str, Any]:
    made = _bank(world)
    return made | {"body": made["document"]}


SKOS_TURTLE = ('@prefix skos: <http://www.w3.org/2004/02/skos/core#> . <urn:s> a skos:ConceptScheme ; '
               'skos:prefLabel "Imported" . <urn:s/ham> a skos:Concept ; skos:inScheme <urn:s> ; skos:notation "ham" . '
               '<urn:s/spam> a skos:Concept ; skos:inScheme <urn:s> ; skos:notation "spam" .')
MULTIPART = "multipart/form-data; boundary=MatrixBoundary"
IMPORT_UPLOAD = ('--MatrixBoundary\r\nContent-Disposition: form-data; name="file"; filename="m.jsonl"\r\n'
                 'Content-Type: application/octet-stream\r\n\r\n{"external_id": "m-1", "text": "hello"}\n\r\n'
                 '--MatrixBoundary--\r\n')


@dataclass(frozen=True)
class Row:
    method: str
    capability: str
    success: int
    path: str  # formatted with slug, lease, adjudication, snapshot (and whatever setup returns)
    body: Any = None
    content_type: str = "application/json"
    setup: Setup = _no_setup
    lease: bool = False  # only the lease holder succeeds
    query: dict[str, Any] = field(default_factory=dict)


TAXONOMY_DOC = {"name": "Imported", "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"},
                                               {"key": "abuse", "name": "Abuse", "children": [
                                                   {"key": "threat", "name": "Threat"},
                                                   {"key": "slur", "name": "Slur"}]},
                                               {"key": "scam", "name": "Scam"}]}
NEW_PROJECT = {"slug": "brand-new", "name": "Brand new",
               "taxonomy": {"name": "T", "labels": [{"key": "a", "name": "A"}]}}
P = "/api/projects/{slug}"

# Route (as Django's resolver spells it) -> the rows for its methods.
MATRIX: dict[str, list[Row]] = {
    "api/schema/": [Row("GET", PUBLIC, 200, "/api/schema/")],
    # Public (a load balancer has no token); a live heartbeat so the answer is 200. It carries no project data.
    "api/health/": [Row("GET", PUBLIC, 200, "/api/health/", setup=_heartbeat)],
    "api/auth/token/": [Row("POST", PUBLIC, 200, "/api/auth/token/",
                            body={"username": "reviewer2", "password": PASSWORD})],
    "api/projects/": [Row("GET", AUTHENTICATED, 200, "/api/projects/"),
                      Row("POST", CREATOR, 201, "/api/projects/", body=NEW_PROJECT)],
    "api/projects/<slug:slug>/": [Row("GET", Capability.VIEW, 200, P + "/")],
    "api/projects/<slug:slug>/models/": [Row("GET", Capability.VIEW, 200, P + "/models/")],
    "api/projects/<slug:slug>/embedding/": [Row("GET", Capability.VIEW, 200, P + "/embedding/")],
    "api/projects/<slug:slug>/propagation/": [
        Row("GET", Capability.VIEW, 200, P + "/propagation/"),
        Row("PUT", Capability.EDIT_TAXONOMY, 200, P + "/propagation/",
            body={"label": "spam", "mode": "propagate", "threshold": 0.9, "verification_share": 0.1})],
    "api/projects/<slug:slug>/banks/": [
        Row("GET", Capability.VIEW, 200, P + "/banks/"),
        Row("POST", Capability.EDIT_TAXONOMY, 201, P + "/banks/", body={"name": "Scams", "label": "spam"})],
    "api/projects/<slug:slug>/banks/import": [
        Row("POST", Capability.EDIT_TAXONOMY, 201, P + "/banks/import", setup=_bank_import)],
    "api/projects/<slug:slug>/banks/<int:bank_id>/": [
        Row("GET", Capability.VIEW, 200, P + "/banks/{bank}/", setup=_bank)],
    "api/projects/<slug:slug>/banks/<int:bank_id>/confirm": [
        Row("POST", Capability.EDIT_TAXONOMY, 200, P + "/banks/{bank}/confirm", setup=_bank_confirm)],
    "api/projects/<slug:slug>/banks/<int:bank_id>/entries/<int:entry_id>/deconfirm": [
        Row("POST", Capability.EDIT_TAXONOMY, 200, P + "/banks/{bank}/entries/{entry}/deconfirm", setup=_bank)],
    "api/projects/<slug:slug>/banks/<int:bank_id>/export": [
        Row("GET", Capability.EDIT_TAXONOMY, 200, P + "/banks/{bank}/export", setup=_bank)],
    "api/projects/<slug:slug>/wellness/": [
        Row("GET", Capability.VIEW, 200, P + "/wellness/"),
        Row("PATCH", Capability.EDIT_TAXONOMY, 200, P + "/wellness/", body={"daily_severe_budget": 20})],
    "api/projects/<slug:slug>/wellness/me": [
        Row("PUT", Capability.LABEL, 200, P + "/wellness/me", body={"blur": "all"})],
    "api/projects/<slug:slug>/wellness/exposure": [Row("GET", Capability.VIEW_STATS, 200, P + "/wellness/exposure")],
    "api/projects/<slug:slug>/items/import": [
        Row("POST", Capability.IMPORT, 200, P + "/items/import",
            body='{"external_id": "imported-1", "text": "hello"}\n', content_type="application/x-ndjson")],
    "api/projects/<slug:slug>/imports/": [
        Row("GET", Capability.IMPORT, 200, P + "/imports/"),
        Row("POST", Capability.IMPORT, 202, P + "/imports/", body=IMPORT_UPLOAD, content_type=MULTIPART)],
    "api/projects/<slug:slug>/imports/<int:job_id>/": [
        Row("GET", Capability.IMPORT, 200, P + "/imports/{job}/", setup=_import_job)],
    "api/projects/<slug:slug>/imports/<int:job_id>/errors": [
        Row("GET", Capability.IMPORT, 200, P + "/imports/{job}/errors", setup=_import_job)],
    "api/projects/<slug:slug>/languages/": [Row("GET", Capability.VIEW, 200, P + "/languages/")],
    "api/projects/<slug:slug>/embedder": [
        Row("POST", Capability.MANAGE, 200, P + "/embedder", body={"embedder": "hashing"})],
    "api/projects/<slug:slug>/members/<str:username>": [
        Row("PATCH", Capability.ASSIGN_LANGUAGES, 200, P + "/members/reviewer", body={"languages": ["hi"]})],
    "api/projects/<slug:slug>/privacy": [
        Row("GET", Capability.MANAGE, 200, P + "/privacy"),
        Row("PATCH", Capability.MANAGE, 200, P + "/privacy", body={"mask_pii": True, "mask_detectors": ["email"]})],
    "api/projects/<slug:slug>/items/<int:item_id>/reveal": [
        Row("POST", Capability.REVEAL_PII, 200, P + "/items/{item}/reveal", body={"reason": "matrix"},
            setup=_some_item)],
    "api/projects/<slug:slug>/items/<int:item_id>/image/<str:variant>": [
        Row("GET", Capability.VIEW, 200, P + "/items/{item}/image/display", setup=_item_with_image)],
    "api/projects/<slug:slug>/items/<int:item_id>/history/": [
        Row("GET", Capability.ADJUDICATE, 200, P + "/items/{item}/history/", setup=_some_item_ref)],
    "api/projects/<slug:slug>/items/history/": [
        Row("GET", Capability.ADJUDICATE, 200, P + "/items/history/?external_id={external_id}",
            setup=_some_item_ref)],
    "api/projects/<slug:slug>/items/delete": [
        Row("POST", Capability.DELETE_ITEMS, 200, P + "/items/delete", setup=_some_item)],
    "api/projects/<slug:slug>/taxonomy/": [Row("GET", Capability.VIEW, 200, P + "/taxonomy/")],
    "api/projects/<slug:slug>/taxonomy/versions/": [Row("GET", Capability.VIEW, 200, P + "/taxonomy/versions/")],
    "api/projects/<slug:slug>/taxonomy/versions/<int:number>/": [
        Row("GET", Capability.VIEW, 200, P + "/taxonomy/versions/1/")],
    "api/projects/<slug:slug>/taxonomy/diff": [
        Row("GET", Capability.VIEW, 200, P + "/taxonomy/diff", query={"from": 1, "to": 2})],
    "api/projects/<slug:slug>/taxonomy/export": [Row("GET", Capability.VIEW, 200, P + "/taxonomy/export")],
    "api/projects/<slug:slug>/taxonomy/import": [
        Row("POST", Capability.EDIT_TAXONOMY, 200, P + "/taxonomy/import", body=TAXONOMY_DOC)],
    "api/projects/<slug:slug>/taxonomy/skos": [
        Row("GET", Capability.VIEW, 200, P + "/taxonomy/skos"),
        Row("POST", Capability.EDIT_TAXONOMY, 200, P + "/taxonomy/skos", body=SKOS_TURTLE, content_type="text/turtle")],
    "api/projects/<slug:slug>/taxonomy/draft": [
        Row("GET", Capability.EDIT_TAXONOMY, 200, P + "/taxonomy/draft"),
        Row("PUT", Capability.EDIT_TAXONOMY, 200, P + "/taxonomy/draft", body=TAXONOMY_DOC),
        Row("DELETE", Capability.EDIT_TAXONOMY, 204, P + "/taxonomy/draft", setup=_draft)],
    "api/projects/<slug:slug>/taxonomy/draft/preview": [
        Row("POST", Capability.EDIT_TAXONOMY, 200, P + "/taxonomy/draft/preview", setup=_draft)],
    "api/projects/<slug:slug>/taxonomy/draft/publish": [
        Row("POST", Capability.EDIT_TAXONOMY, 201, P + "/taxonomy/draft/publish", body={"changelog": "Adds new"},
            setup=_draft)],
    "api/projects/<slug:slug>/queue/next": [Row("POST", Capability.LABEL, 200, P + "/queue/next")],
    "api/projects/<slug:slug>/progress": [Row("GET", Capability.VIEW, 200, P + "/progress")],
    "api/leases/<int:lease_id>/submit": [
        Row("POST", Capability.LABEL, 201, "/api/leases/{lease}/submit", body={"labels": ["spam"]}, lease=True)],
    "api/leases/<int:lease_id>/skip": [Row("POST", Capability.LABEL, 200, "/api/leases/{lease}/skip", lease=True)],
    "api/leases/<int:lease_id>/renew": [Row("POST", Capability.LABEL, 200, "/api/leases/{lease}/renew", lease=True)],
    "api/leases/<int:lease_id>/undo": [
        Row("POST", Capability.LABEL, 200, "/api/leases/{lease}/undo", lease=True, setup=_submitted_now)],
    "api/projects/<slug:slug>/export": [Row("GET", Capability.EXPORT, 200, P + "/export")],
    "api/projects/<slug:slug>/exports/": [
        Row("GET", Capability.EXPORT, 200, P + "/exports/"),
        Row("POST", Capability.EXPORT, 202, P + "/exports/", body={"name": "matrix-snap", "format": "csv"})],
    "api/projects/<slug:slug>/exports/<slug:name>/": [Row("GET", Capability.EXPORT, 200, P + "/exports/{snapshot}/")],
    "api/projects/<slug:slug>/exports/<slug:name>/download": [
        Row("GET", Capability.EXPORT, 200, P + "/exports/{snapshot}/download")],
    "api/projects/<slug:slug>/exports/<slug:name>/retry": [
        Row("POST", Capability.EXPORT, 202, P + "/exports/{snapshot}/retry", setup=_failed_snapshot)],
    "api/projects/<slug:slug>/stats/": [Row("GET", Capability.VIEW_STATS, 200, P + "/stats/")],
    "api/projects/<slug:slug>/stats/agreement": [Row("GET", Capability.VIEW_STATS, 200, P + "/stats/agreement")],
    "api/projects/<slug:slug>/stats/reviewers": [Row("GET", Capability.VIEW_STATS, 200, P + "/stats/reviewers")],
    "api/projects/<slug:slug>/stats/prevalence": [Row("GET", Capability.VIEW_STATS, 200, P + "/stats/prevalence")],
    "api/projects/<slug:slug>/stats/queue-health": [
        Row("GET", Capability.VIEW_STATS, 200, P + "/stats/queue-health")],
    "api/projects/<slug:slug>/stats/timeline": [Row("GET", Capability.VIEW_STATS, 200, P + "/stats/timeline")],
    "api/projects/<slug:slug>/label-errors/": [
        Row("GET", Capability.VIEW_STATS, 200, P + "/label-errors/", setup=_suspected_error)],
    "api/projects/<slug:slug>/adjudications/": [
        Row("GET", Capability.ADJUDICATE, 200, P + "/adjudications/"),
        Row("POST", Capability.ADJUDICATE, 201, P + "/adjudications/", setup=_item_without_adjudication)],
    "api/projects/<slug:slug>/adjudications/<int:adjudication_id>/": [
        Row("GET", Capability.ADJUDICATE, 200, P + "/adjudications/{adjudication}/")],
    "api/projects/<slug:slug>/adjudications/<int:adjudication_id>/decide": [
        Row("POST", Capability.ADJUDICATE, 200, P + "/adjudications/{adjudication}/decide",
            body={"labels": ["spam"], "note": "decided"})],
}


def all_routes() -> Iterator[tuple[str, Any]]:
    """(route, view callback) for every URL pattern, includes flattened, as Django's resolver has them."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                yield route, pattern.callback

    yield from walk(get_resolver().url_patterns, "")


def api_routes() -> Iterator[tuple[str, Any]]:
    yield from ((route, callback) for route, callback in all_routes() if route.startswith("api/"))


def _methods(callback: Any) -> set[str]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    assert view_class is not None, f"{callback} is not a class-based view: add its methods to the matrix by hand"
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)}


def test_matrix_covers_every_api_route() -> None:
    routes = dict(api_routes())
    assert set(routes) == set(MATRIX), {
        "routes without a row": sorted(set(routes) - set(MATRIX)),
        "rows without a route": sorted(set(MATRIX) - set(routes)),
    }
    for route, callback in routes.items():
        assert _methods(callback) == {row.method for row in MATRIX[route]}, route


def expected_status(row: Row, identity: str) -> int:
    if row.capability == PUBLIC:
        return row.success
    if identity == "anonymous":
        return 401
    if row.capability == AUTHENTICATED:
        return row.success
    if row.capability == CREATOR:
        return row.success if identity in CREATORS else 403
    if identity == "outsider":
        return 404
    if row.capability not in ROLE_CAPABILITIES[identity]:
        return 403
    if row.lease and identity != LEASE_HOLDER:
        return 403
    return row.success


def _client(world: World, identity: str) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    if identity != "anonymous":
        token, _ = Token.objects.get_or_create(user=world.users[identity])
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def _content(response: Any) -> bytes:
    """The whole body, streamed ones included (their generator must run inside the request's savepoint)."""
    if getattr(response, "streaming", False):
        # The test client closes the response when the iteration ends; closing it again would fire
        # request_finished with close_old_connections connected, and close the test's connection.
        return b"".join(response.streaming_content)
    return bytes(response.content)


def call(world: World, identity: str, row: Row) -> tuple[int, bytes, bool]:
    """Send ``row`` as ``identity`` inside a savepoint; (status, body, whether the world changed)."""
    client = _client(world, identity)
    savepoint = transaction.savepoint()
    try:
        params = {"slug": "sms", "lease": world.active_leases[LEASE_HOLDER],
                  "adjudication": world.adjudication_pending, "snapshot": world.snapshot, "body": row.body}
        params.update(row.setup(world))
        before = table_fingerprint()
        path = row.path.format(**params)
        body = params["body"]
        data = json.dumps(body) if row.content_type == "application/json" and body is not None else body
        send = getattr(client, row.method.lower())
        if row.method == "GET":
            response = send(path, row.query)
        else:
            query = "?" + "&".join(f"{k}={v}" for k, v in row.query.items()) if row.query else ""
            response = send(path + query, data=data, content_type=row.content_type)
        content = _content(response)
        changed = table_fingerprint() != before
    finally:
        transaction.savepoint_rollback(savepoint)
    return response.status_code, content, changed


@pytest.fixture
def world(db: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    from django.core.cache import cache

    from config.celery import app

    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.STORAGES = {**settings.STORAGES, "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "images")}}}
    settings.IMPORT_ROOT = tmp_path / "imports"
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)
    cache.clear()  # the token endpoint's throttle counts
    return seed_world(plain_text)


@pytest.mark.parametrize("identity", IDENTITIES)
def test_every_route_answers_each_identity_exactly(world: World, identity: str) -> None:
    problems: list[str] = []
    for route, rows in MATRIX.items():
        for row in rows:
            expected = expected_status(row, identity)
            status, content, changed = call(world, identity, row)
            label = f"{row.method} {route} as {identity}"
            if status != expected:
                problems.append(f"{label}: {status}, expected {expected}: {content[:200]!r}")
                continue
            if expected >= 400:
                if changed:
                    problems.append(f"{label}: denied with {status} but changed the database")
                if row.capability != PUBLIC and identity in ("anonymous", "outsider"):
                    text = content.decode("utf-8", "replace")
                    leaked = [marker for marker in SMS_MARKERS if marker in text]
                    if leaked:
                        problems.append(f"{label}: the answer carries project data {leaked}: {text[:200]}")
                # Errors come in the API's one shape: {"detail", "code", ...}.
                body = json.loads(content)
                if not (isinstance(body, dict) and {"detail", "code"} <= body.keys()):
                    problems.append(f"{label}: error body is not {{'detail', 'code', ...}}: {body!r}")
    assert problems == [], "\n".join(problems)


def test_outsider_project_list_shows_nothing_of_sms(world: World) -> None:
    body = _client(world, "outsider").get("/api/projects/").json()
    assert [project["slug"] for project in body] == ["other"]


def test_denied_identities_leave_every_table_unchanged(world: World) -> None:
    """Belt and braces over the per-request check: a whole sweep of denied writes changes no row."""
    clients = {identity: _client(world, identity) for identity in ("anonymous", "outsider", "reviewer")}
    before = table_fingerprint()
    for identity, client in clients.items():
        for path in ("/api/projects/sms/taxonomy/draft/publish", "/api/projects/sms/exports/",
                     f"/api/projects/sms/adjudications/{world.adjudication_pending}/decide",
                     f"/api/leases/{world.active_leases['reviewer2']}/submit"):
            response = client.post(path, data={"labels": ["spam"], "name": "x", "changelog": "x"}, format="json")
            assert response.status_code in (401, 403, 404), (identity, path, response.status_code)
    assert table_fingerprint() == before


# --- The pages ------------------------------------------------------------------------------------------------------

# Project pages (route -> capability); login, logout and the project list are for everyone signed in.
PAGES: dict[str, str] = {
    "projects/<slug:slug>/label/": Capability.LABEL,
    "projects/<slug:slug>/taxonomy/": Capability.EDIT_TAXONOMY,
    "projects/<slug:slug>/taxonomy/history/": Capability.VIEW,
    "projects/<slug:slug>/guidelines/": Capability.VIEW,
    "projects/<slug:slug>/dashboard/": Capability.VIEW_STATS,
    "projects/<slug:slug>/adjudication/": Capability.ADJUDICATE,
    "projects/<slug:slug>/items/<int:item_id>/history/": Capability.ADJUDICATE,
    "projects/<slug:slug>/items/history/": Capability.ADJUDICATE,
    "projects/<slug:slug>/members/": Capability.MANAGE,
    "projects/<slug:slug>/settings/": Capability.MANAGE,
    "projects/<slug:slug>/import/": Capability.IMPORT,
    "projects/<slug:slug>/export/": Capability.EXPORT,
    "projects/<slug:slug>/models/": Capability.VIEW_STATS,
}
# An allowed identity's answer where it is not 200: the history lookup redirects (to the item, or back).
PAGE_ALLOWED_STATUS: dict[str, int] = {"projects/<slug:slug>/items/history/": 302}


def test_every_project_page_answers_each_identity_exactly(world: World) -> None:
    """Pages follow the API's rule, except that an anonymous visitor is sent to the login page."""
    from django.test import Client

    page_routes = {route for route, _ in all_routes() if route.startswith("projects/<slug:slug>/")}
    assert page_routes == set(PAGES), page_routes ^ set(PAGES)
    problems = []
    for identity in IDENTITIES:
        client = Client()
        if identity != "anonymous":
            client.force_login(world.users[identity])
        for route, capability in PAGES.items():
            item_id = Item.objects.filter(project=world.project).order_by("id").values_list("id", flat=True)[0]
            path = "/" + route.replace("<slug:slug>", "sms").replace("<int:item_id>", str(item_id))
            response = client.get(path)
            if identity == "anonymous":
                expected, ok = 302, response.get("Location", "").startswith("/login/")
            else:
                expected = 404 if identity == "outsider" else (
                    PAGE_ALLOWED_STATUS.get(route, 200) if capability in ROLE_CAPABILITIES[identity] else 403)
                ok = True
            if response.status_code != expected or not ok:
                problems.append(f"GET {path} as {identity}: {response.status_code}, expected {expected}")
            if expected in (302, 404):
                text = response.content.decode("utf-8", "replace")
                leaked = [marker for marker in SMS_MARKERS if marker in text]
                if leaked:
                    problems.append(f"GET {path} as {identity}: the answer carries project data {leaked}")
    # The adjudication form's POST is a write: only adjudicators, and a denied one changes nothing.
    for identity in ("reviewer", "ml_engineer", "outsider"):
        client = Client()
        client.force_login(world.users[identity])
        before = table_fingerprint()
        response = client.post("/projects/sms/adjudication/", {"adjudication": world.adjudication_pending,
                                                               "labels": ["spam"]})
        expected = 404 if identity == "outsider" else 403
        if response.status_code != expected or table_fingerprint() != before:
            problems.append(f"POST adjudication form as {identity}: {response.status_code}, expected {expected}")
    assert problems == [], "\n".join(problems)


def test_new_project_page_is_for_project_creators_only(world: World) -> None:
    """``/projects/new/``: creators 200; every other signed-in user 403 (whatever their roles); anonymous to login.
    A refused POST creates nothing."""
    from django.test import Client

    from labeling.models import Project

    problems = []
    for identity in IDENTITIES:
        client = Client()
        if identity != "anonymous":
            client.force_login(world.users[identity])
        response = client.get("/projects/new/")
        expected = 302 if identity == "anonymous" else (200 if identity in CREATORS else 403)
        if response.status_code != expected:
            problems.append(f"GET /projects/new/ as {identity}: {response.status_code}, expected {expected}")
        if identity not in CREATORS:
            before = (Project.objects.count(), table_fingerprint())
            response = client.post("/projects/new/", {"name": "X", "slug": "x-new", "taxonomy_source": "editor",
                                                      "taxonomy_json": json.dumps(NEW_PROJECT["taxonomy"])})
            if response.status_code not in (302, 403) or (Project.objects.count(), table_fingerprint()) != before:
                problems.append(f"POST /projects/new/ as {identity}: {response.status_code} or a change")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("page", "form"), [
    ("members", {"action": "add", "username": "reviewer2", "role": "admin"}),
    ("members", {"action": "remove", "username": "reviewer2"}),
    ("export", {"action": "snapshot", "name": "matrix-page-snap", "format": "csv"}),
    ("settings", {"name": "Renamed", "strategy": "default", "exploration_rate": "0.1", "gold_rate": "0",
                  "suggestion_holdout_rate": "0", "lease_seconds": "600"}),
])
def test_page_writes_are_refused_without_the_capability(world: World, page: str, form: dict[str, str]) -> None:
    """The members and export forms' POSTs: a member without the capability gets 403, an outsider 404, and
    nothing changes."""
    from django.test import Client

    capability = PAGES[f"projects/<slug:slug>/{page}/"]
    for identity in ("outsider", *ROLES):
        if identity != "outsider" and capability in ROLE_CAPABILITIES[identity]:
            continue
        client = Client()
        client.force_login(world.users[identity])
        before = table_fingerprint()
        response = client.post(f"/projects/sms/{page}/", form)
        assert (response.status_code, table_fingerprint() == before) == (
            404 if identity == "outsider" else 403, True), identity
