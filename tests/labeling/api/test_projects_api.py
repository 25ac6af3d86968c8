from __future__ import annotations

from typing import Any

import pytest

from labeling.models import AuditEvent, Label, Membership, Project, TaxonomyVersion
from tests.conftest import SMS_TAXONOMY

pytestmark = pytest.mark.django_db


def test_token_round_trip(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(None).post("/api/auth/token/", {"username": "reviewer", "password": "correct-horse-battery"},
                                 format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    listing = api_as(None)
    listing.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert [p["slug"] for p in listing.get("/api/projects/").json()] == ["sms"]


def test_token_rejects_wrong_password(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(None).post("/api/auth/token/", {"username": "reviewer", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"


def test_project_list_shows_only_memberships_with_role(cast: dict[str, Any], api_as: Any) -> None:
    body = api_as(cast["users"]["policy_lead"]).get("/api/projects/").json()
    assert [(p["slug"], p["role"], p["taxonomy_version"]) for p in body] == [("sms", "policy_lead", 1)]


def test_outsider_gets_404_not_the_project(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["outsider"]).get("/api/projects/sms/")
    assert response.status_code == 404
    assert "sms" not in response.content.decode().lower().replace("/api/projects/sms/", "")


def test_create_project_publishes_taxonomy_v1_and_makes_creator_admin(cast: dict[str, Any], api_as: Any) -> None:
    admin = cast["users"]["admin"]
    taxonomy = {
        "name": "Abuse", "multi_label": True,
        "labels": [{"key": "hate", "name": "Hate", "children": [{"key": "hate/slur", "name": "Slur"}]},
                   {"key": "ok", "name": "OK"}],
    }
    response = api_as(admin).post("/api/projects/", {"slug": "abuse", "name": "Abuse", "taxonomy": taxonomy,
                                                     "overlap": 2}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["role"] == "admin"
    project = Project.objects.get(slug="abuse")
    assert project.overlap == 2
    version = TaxonomyVersion.objects.get(project=project)
    assert (version.number, version.status, version.multi_label) == (1, "published", True)
    assert sorted(Label.objects.filter(version=version).values_list("key", "parent__key")) == [
        ("hate", None), ("hate/slur", "hate"), ("ok", None)]
    assert Membership.objects.get(project=project, user=admin).role == "admin"
    assert list(AuditEvent.objects.filter(project=project).values_list("action", flat=True).order_by("id")) == [
        "project.create", "taxonomy.publish"]


def test_bad_taxonomy_names_the_path_and_creates_nothing(cast: dict[str, Any], api_as: Any) -> None:
    taxonomy = {"name": "Dup", "labels": [{"key": "a", "name": "A", "children": [{"key": "a", "name": "again"}]}]}
    before = (Project.objects.count(), TaxonomyVersion.objects.count(), AuditEvent.objects.count())
    response = api_as(cast["users"]["admin"]).post("/api/projects/", {"slug": "dup", "name": "Dup",
                                                                      "taxonomy": taxonomy}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "labels[0].children[0].key: duplicate key 'a' (first at labels[0])"
    assert (Project.objects.count(), TaxonomyVersion.objects.count(), AuditEvent.objects.count()) == before


def test_duplicate_slug_is_409_and_changes_nothing(cast: dict[str, Any], api_as: Any) -> None:
    before = AuditEvent.objects.count()
    response = api_as(cast["users"]["admin"]).post("/api/projects/", {"slug": "sms", "name": "Again",
                                                                      "taxonomy": SMS_TAXONOMY}, format="json")
    assert response.status_code == 409
    assert AuditEvent.objects.count() == before


def test_schema_answers(client: Any) -> None:
    assert client.get("/api/schema/").status_code == 200


def test_create_project_takes_an_embedder_and_refuses_an_unknown_one(cast: dict[str, Any], api_as: Any) -> None:
    admin = api_as(cast["users"]["admin"])
    response = admin.post("/api/projects/", {"slug": "fast", "name": "Fast", "taxonomy": SMS_TAXONOMY,
                                             "embedder": "static"}, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["embedder"], Project.objects.get(slug="fast").embedder) == ("static", "static")
    # The old form (no embedder) keeps the default.
    assert admin.post("/api/projects/", {"slug": "plain", "name": "Plain", "taxonomy": SMS_TAXONOMY},
                      format="json").json()["embedder"] == "minilm"
    before = Project.objects.count()
    bad = admin.post("/api/projects/", {"slug": "bad", "name": "Bad", "taxonomy": SMS_TAXONOMY,
                                        "embedder": "word2vec"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("embedder: unknown embedder 'word2vec'; choose one of minilm, static")
    assert Project.objects.count() == before
