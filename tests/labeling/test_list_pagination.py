"""Every list endpoint pages: /api/projects/ (keyset on slug) and /api/projects/{slug}/models/ (keyset on
version). The first page is the contract's plain list; a Link header names the next page while more remain."""

from __future__ import annotations

import re
from typing import Any

import pytest

from labeling.models import Membership, Project
from learning.models import ModelVersion
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
