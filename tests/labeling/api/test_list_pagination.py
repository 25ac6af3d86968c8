"""Every list endpoint pages: /api/projects/ (keyset on slug), /api/projects/{slug}/models/ and
.../taxonomy/versions/ (keyset on the version number) and .../exports/ (keyset on id). The first page is the
contract's plain list; a Link header names the next page while more remain."""

from __future__ import annotations

import re
from typing import Any

import pytest

from labeling.models import ExportSnapshot, Membership, Project
from labeling.services.taxonomy import taxonomy_publish_document
from labeling.services.taxonomy_io import taxonomy_parse
from learning.models import ModelVersion
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def follow(client: Any, url: str) -> list[list[Any]]:
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        pages.append(response.json())
        link = response.headers.get("Link", "")
        found = re.fullmatch(r'<http://testserver(?P<url>[^>]+)>; rel="next"', link)
        url = found["url"] if found else ""
        assert bool(found) == bool(link)
    return pages


def test_projects_page_by_slug(cast: dict[str, Any], api_as: Any) -> None:
    admin = cast["users"]["admin"]
    for n in range(4):
        project = ProjectFactory(slug=f"zz-{n}")
        Membership.objects.create(project=project, user=admin, role="reviewer")
    client = api_as(admin)
    everything = client.get("/api/projects/")
    assert "Link" not in everything.headers
    assert [p["slug"] for p in everything.json()] == ["sms", "zz-0", "zz-1", "zz-2", "zz-3"]
    pages = follow(client, "/api/projects/?limit=2")
    assert [[p["slug"] for p in page] for page in pages] == [["sms", "zz-0"], ["zz-1", "zz-2"], ["zz-3"]]
    assert pages[0][0] == everything.json()[0]
    for bad, field in (("limit=0", "limit"), ("limit=501", "limit"), ("after=a%20b", "after")):
        response = client.get(f"/api/projects/?{bad}")
        assert response.status_code == 400
        assert response.json()["field"] == field
    assert Project.objects.count() == 6  # the outsider's project is never listed to the admin


def test_models_page_by_version(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    for version in range(1, 6):
        ModelVersion.objects.create(project=project, version=version, fingerprint=f"fp{version}",
                                    status="active" if version == 5 else "superseded", embedder="hashing-v1-384",
                                    strategy="margin_exploit")
    client = api_as(cast["users"]["ml_engineer"])
    pages = follow(client, "/api/projects/sms/models/?limit=2")
    assert [[m["version"] for m in page] for page in pages] == [[5, 4], [3, 2], [1]]
    assert "Link" not in client.get("/api/projects/sms/models/").headers
    response = client.get("/api/projects/sms/models/?before=x")
    assert response.status_code == 400
    assert response.json() == {"detail": "before: must be a positive integer (a model version)", "code": "invalid",
                               "field": "before"}


def test_taxonomy_versions_page_by_number(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    for n in range(2, 6):
        document = {**SMS_TAXONOMY, "labels": [*SMS_TAXONOMY["labels"], {"key": f"extra{n}", "name": f"Extra {n}"}]}
        taxonomy_publish_document(project=project, actor=None, changelog=f"v{n}", parsed=taxonomy_parse(document))
    client = api_as(cast["users"]["reviewer"])
    everything = client.get("/api/projects/sms/taxonomy/versions/")
    assert "Link" not in everything.headers
    assert [v["number"] for v in everything.json()] == [5, 4, 3, 2, 1]
    pages = follow(client, "/api/projects/sms/taxonomy/versions/?limit=2")
    assert [[v["number"] for v in page] for page in pages] == [[5, 4], [3, 2], [1]]
    assert pages == [everything.json()[0:2], everything.json()[2:4], everything.json()[4:]]
    for bad, field in (("limit=0", "limit"), ("limit=501", "limit"), ("before=0", "before"), ("before=x", "before")):
        response = client.get(f"/api/projects/sms/taxonomy/versions/?{bad}")
        assert response.status_code == 400
        assert response.json()["field"] == field


def test_export_snapshots_page_newest_first(cast: dict[str, Any], api_as: Any) -> None:
    project = cast["project"]
    made = [ExportSnapshot.objects.create(project=project, name=f"snap-{n}", format="csv", params={"format": "csv"})
            for n in range(5)]
    ExportSnapshot.objects.create(project=cast["other_project"], name="not-yours", format="csv", params={})
    client = api_as(cast["users"]["ml_engineer"])
    everything = client.get("/api/projects/sms/exports/")
    assert "Link" not in everything.headers
    assert [s["name"] for s in everything.json()] == [s.name for s in reversed(made)]
    pages = follow(client, "/api/projects/sms/exports/?limit=2")
    assert [[s["name"] for s in page] for page in pages] == [["snap-4", "snap-3"], ["snap-2", "snap-1"], ["snap-0"]]
    response = client.get("/api/projects/sms/exports/?limit=x")
    assert (response.status_code, response.json()["field"]) == (400, "limit")
