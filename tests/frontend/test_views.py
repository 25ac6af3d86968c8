"""Page views: login, the project list (scoping, role, progress) and the labelling page shell."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from labeling.models import Annotation, Item, Lease, Project
from learning.api import EmbeddingStatus
from learning.models import LearningJob, ModelVersion
from tests.factories import ItemFactory, ProjectFactory, UserFactory, member
from tests.learning.support import add_items, embed_items

pytestmark = pytest.mark.django_db

HIERARCHY: dict[str, Any] = {
    "name": "SMS policy",
    "multi_label": False,
    "labels": [
        {"key": "ham", "name": "Ham", "description": "Ordinary **personal** message."},
        {"key": "spam", "name": "Spam", "description": "Unwanted.", "children": [
            {"key": "spam/phishing", "name": "Phishing",
             "description": "Asks for credentials. <script>window.__x=1</script> [bad](javascript:alert(1)) "
                            "[ok](https://example.org/policy) ![img](https://tracker.example/p.png)"},
            {"key": "spam/promo", "name": "Promotion </script><b>x</b>", "description": ""},
        ]},
        {"key": "old", "name": "Old label", "deprecated": True},
    ],
}


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def annotate(item: Item, reviewer: Any, *, days_ago: int = 0) -> Annotation:
    version = item.project.current_taxonomy_version
    assert version is not None
    annotation = Annotation.objects.create(
        project=item.project, item=item, reviewer=reviewer, labels=["ham"],
        taxonomy_version=version, selection_reason="fallback_random",
    )
    if days_ago:
        Annotation.objects.filter(pk=annotation.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return annotation


# --- Login ---------------------------------------------------------------------------


def test_pages_require_login(cast: dict[str, Any]) -> None:
    client = Client()
    assert client.get("/").status_code == 302
    assert client.get("/")["Location"] == "/login/?next=/"
    response = client.get("/projects/sms/label/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/projects/sms/label/"


def test_login_form_logs_in_and_redirects_to_next(cast: dict[str, Any]) -> None:
    client = Client()
    page = client.get("/login/?next=/projects/sms/label/")
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content
    assert b"Please log in to continue." in page.content
    response = client.post("/login/", {"username": "reviewer", "password": "correct-horse-battery",
                                       "next": "/projects/sms/label/"})
    assert response.status_code == 302
    assert response["Location"] == "/projects/sms/label/"
    assert client.get("/projects/sms/label/").status_code == 200


def test_login_form_rejects_wrong_password(cast: dict[str, Any]) -> None:
    client = Client()
    response = client.post("/login/", {"username": "reviewer", "password": "wrong-password"})
    assert response.status_code == 200
    assert b"Your username and password didn't match" in response.content
    assert "_auth_user_id" not in client.session


# --- Project list --------------------------------------------------------------------


def test_reviewer_sees_only_their_projects_with_role(cast: dict[str, Any]) -> None:
    body = logged_in(cast["users"]["reviewer"]).get("/").content.decode()
    assert re.findall(r'data-project="([^"]+)"', body) == ["sms"]
    assert "Reviewer" in body
    assert 'href="/projects/sms/label/"' in body
    assert "other" not in re.findall(r'data-project="([^"]+)"', body)


def test_outsider_sees_their_project_not_sms(cast: dict[str, Any]) -> None:
    body = logged_in(cast["users"]["outsider"]).get("/").content.decode()
    assert re.findall(r'data-project="([^"]+)"', body) == ["other"]
    assert "/projects/sms/" not in body


def test_role_without_label_capability_gets_no_label_link(cast: dict[str, Any]) -> None:
    body = logged_in(cast["users"]["ml_engineer"]).get("/").content.decode()
    assert re.findall(r'data-project="([^"]+)"', body) == ["sms"]
    assert "ML engineer" in body
    assert "/projects/sms/label/" not in body
    assert "Your role does not label." in body


@pytest.mark.parametrize(("role", "links"), [
    ("reviewer", ["/projects/sms/guidelines/"]),
    ("policy_lead", ["/projects/sms/guidelines/", "/projects/sms/taxonomy/", "/projects/sms/dashboard/",
                     "/projects/sms/adjudication/", "/projects/sms/models/", "/projects/sms/import/"]),
    ("ml_engineer", ["/projects/sms/guidelines/", "/projects/sms/dashboard/", "/projects/sms/models/",
                     "/projects/sms/import/", "/projects/sms/export/"]),
    ("admin", ["/projects/sms/guidelines/", "/projects/sms/taxonomy/", "/projects/sms/dashboard/",
               "/projects/sms/adjudication/", "/projects/sms/models/", "/projects/sms/import/",
               "/projects/sms/export/", "/projects/sms/members/", "/projects/sms/settings/"]),
])
def test_project_page_links_follow_the_role(cast: dict[str, Any], role: str, links: list[str]) -> None:
    client = logged_in(cast["users"][role])
    body = client.get("/").content.decode()
    nav = re.search(r'<nav class="project-links"[^>]*>(.*?)</nav>', body, re.S)
    assert nav is not None
    assert re.findall(r'href="([^"]+)"', nav.group(1)) == links
    # Every link offered opens for this role.
    assert [client.get(link).status_code for link in links] == [200] * len(links)


def test_user_without_projects_sees_empty_state(db: Any) -> None:
    body = logged_in(UserFactory(username="loner")).get("/").content.decode()
    assert "No projects yet" in body
    assert "data-project=" not in body


def test_project_progress_counts(cast: dict[str, Any]) -> None:
    project: Project = cast["project"]
    reviewer = cast["users"]["reviewer"]
    items = ItemFactory.create_batch(5, project=project)
    Item.objects.filter(pk__in=[items[0].pk, items[1].pk]).update(n_done=1)
    annotate(items[0], reviewer)
    annotate(items[1], reviewer, days_ago=2)
    # Someone else's label today and another project's items do not count as "mine" or "sms".
    annotate(items[2], cast["users"]["policy_lead"])
    ItemFactory.create_batch(3, project=cast["other_project"])

    body = logged_in(reviewer).get("/").content.decode()
    assert re.search(r'class="stat-finished">2 / 5<', body)
    assert re.search(r'class="stat-open">3<', body)
    assert re.search(r'class="stat-mine">1<', body)
    assert '<progress max="5" value="2"' in body


def test_project_list_query_count_does_not_grow_with_projects(
    cast: dict[str, Any], django_assert_num_queries: Any
) -> None:
    reviewer = cast["users"]["reviewer"]
    client = logged_in(reviewer)
    ItemFactory.create_batch(2, project=cast["project"])
    # session + user, then projects, item-count ledger, active models, my-annotations aggregate, the embed jobs'
    # states and one grouped count of embedded items (per embedder, for the projects whose figure is not cached),
    # and the caller's user and group permissions (may they create projects: the "New project" button).
    with django_assert_num_queries(10):
        client.get("/")
    for n in range(4):
        project = ProjectFactory(slug=f"extra-{n}")
        member(project, username="reviewer", role="reviewer")
        ItemFactory.create_batch(2, project=project)
        ModelVersion.objects.create(project=project, version=1, status="active", fingerprint="fp",
                                    embedder="hashing-v1-384", strategy="margin_exploit")
    # ... plus one grouped count of the labels newer than each active model.
    with django_assert_num_queries(11):
        body = client.get("/").content.decode()
    assert len(re.findall(r'data-project="([^"]+)"', body)) == 5


# --- Embedding progress on the pages ----------------------------------------------------


def test_home_and_label_pages_say_how_far_embedding_is(cast: dict[str, Any]) -> None:
    project = cast["project"]
    Project.objects.filter(pk=project.pk).update(embedder="hashing")
    items = add_items(project, [f"message {i}" for i in range(5)])
    embed_items(items[:2])
    client = logged_in(cast["users"]["reviewer"])
    message = ("Embedding 2 of 5 items (hashing). Until the first model is trained, the queue serves items in "
               "random order.")

    home = client.get("/").content.decode()
    assert '<p class="small alert stat-embedding" data-state="embedding" role="status">' in home
    assert '<progress max="5" value="2" aria-label="Items embedded">2 of 5</progress>' in home
    assert f'<span class="stat-embedding-text">{message}</span>' in home
    assert '<meta http-equiv="refresh" content="5">' in home  # the page follows the progress by itself

    label = client.get("/projects/sms/label/").content.decode()
    assert re.search(r'<p id="learning-status" class="alert learning-status small" role="status" '
                     r'data-state="embedding">', label)
    assert f'<span id="learning-status-text">{message}</span>' in label
    config = json.loads(re.search(r'<script id="label-config" type="application/json">(.*?)</script>', label,
                                  re.S).group(1))  # type: ignore[union-attr]
    assert config["urls"]["embedding"] == "/api/projects/sms/embedding/"

    # Every item embedded, no model yet: the first model is training.
    embed_items(items[2:])
    LearningJob.objects.create(project=project, kind=LearningJob.Kind.EMBED, generation=1)  # the pass that did it
    home = client.get("/").content.decode()
    assert 'data-state="training"' in home and "All 5 items are embedded; training the first model." in home
    assert 'aria-label="Items embedded"' not in home

    # A model serves the queue: nothing to say, and the page stops reloading itself.
    ModelVersion.objects.create(project=project, version=1, status="active", fingerprint="fp",
                                embedder="hashing-v1-384", strategy="margin_exploit")
    home = client.get("/").content.decode()
    assert "stat-embedding" not in home and 'http-equiv="refresh"' not in home
    label = client.get("/projects/sms/label/").content.decode()
    assert re.search(r'<p id="learning-status"[^>]*data-state="ready" hidden>', label)


def test_the_embedding_status_is_escaped_on_both_pages(cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    add_items(cast["project"], ["one"])
    monkeypatch.setattr(EmbeddingStatus, "message", property(lambda self: '<img src=x onerror="alert(1)">'))
    client = logged_in(cast["users"]["reviewer"])
    for path in ("/", "/projects/sms/label/"):
        body = client.get(path).content.decode()
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
        assert "<img src=x" not in body


# --- Labelling page ------------------------------------------------------------------


def test_label_page_404_for_non_member(cast: dict[str, Any]) -> None:
    response = logged_in(cast["users"]["outsider"]).get("/projects/sms/label/")
    assert response.status_code == 404
    assert Lease.objects.count() == 0


def test_label_page_404_for_unknown_project(cast: dict[str, Any]) -> None:
    assert logged_in(cast["users"]["reviewer"]).get("/projects/nope/label/").status_code == 404


def test_label_page_403_for_role_that_cannot_label(cast: dict[str, Any]) -> None:
    response = logged_in(cast["users"]["ml_engineer"]).get("/projects/sms/label/")
    assert response.status_code == 403
    assert Lease.objects.count() == 0


def test_label_page_renders_shell_without_checking_out(cast: dict[str, Any]) -> None:
    ItemFactory(project=cast["project"], text="hello")
    response = logged_in(cast["users"]["reviewer"]).get("/projects/sms/label/")
    assert response.status_code == 200
    body = response.content.decode()
    # The page is a shell: the item arrives through the API, so a page view leases nothing.
    assert Lease.objects.count() == 0
    assert "hello" not in body
    assert '<meta name="csrf-token" content="' in body
    assert re.search(r'<script src="/static/frontend/label.js" defer>', body)
    assert "<script>" not in body  # no inline script: the CSP forbids it
    assert " style=" not in body and " onclick=" not in body


def _config(body: str) -> dict[str, Any]:
    match = re.search(r'<script id="label-config" type="application/json">(.*?)</script>', body, re.S)
    assert match is not None
    parsed: dict[str, Any] = json.loads(match.group(1))
    return parsed


def test_label_page_taxonomy_tree_hotkeys_and_config(db: Any) -> None:
    project = ProjectFactory(slug="tree", taxonomy=HIERARCHY)
    reviewer = member(project, username="rev", role="reviewer")
    body = logged_in(reviewer).get("/projects/tree/label/").content.decode()
    config = _config(body)
    assert config["tree"] == [
        {"key": "ham", "name": "Ham", "children": []},
        {"key": "spam", "name": "Spam", "children": [
            {"key": "spam/phishing", "name": "Phishing", "children": []},
            {"key": "spam/promo", "name": "Promotion </script><b>x</b>", "children": []},
        ]},
    ]
    assert config["slug"] == "tree"
    assert config["taxonomy_version"] == 1
    assert config["multi_label"] is False
    assert config["urls"]["next"] == "/api/projects/tree/queue/next"
    assert config["urls"]["progress"] == "/api/projects/tree/progress"
    # Deprecated labels are not offered; each button shows its digit among its siblings.
    buttons = re.findall(r'data-label-key="([^"]+)"[^>]*>\s*<kbd class="hotkey" aria-hidden="true">(\d)</kbd>', body)
    assert buttons == [("ham", "1"), ("spam", "2"), ("spam/phishing", "1"), ("spam/promo", "2")]
    assert "Old label" not in body
    # A label name is escaped everywhere it appears, including inside the JSON island.
    assert "Promotion </script><b>x</b>" not in body
    assert "Promotion &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in body


def test_guidelines_render_markdown_sanitised(db: Any) -> None:
    project = ProjectFactory(slug="tree", taxonomy=HIERARCHY)
    reviewer = member(project, username="rev", role="reviewer")
    body = logged_in(reviewer).get("/projects/tree/label/").content.decode()
    assert "<p>Ordinary <strong>personal</strong> message.</p>" in body
    assert "<script>window.__x" not in body
    assert "&lt;script&gt;window.__x=1&lt;/script&gt;" in body
    # markdown-it refuses the javascript: link, so it stays literal text, never an href.
    assert 'href="javascript:' not in body
    assert "[bad](javascript:alert(1))" in body
    assert '<a href="https://example.org/policy" rel="noopener noreferrer nofollow">ok</a>' in body
    # Images are never embedded: a guideline must not make reviewers' browsers fetch a URL someone typed.
    assert "<img" not in body
    assert "tracker.example" not in body
