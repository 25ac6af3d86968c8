"""The pages that run a project (frontend/views_manage.py): new project, members, import, export, models."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from labeling.models import AuditEvent, ExportSnapshot, ImportJob, Lease, Membership, Project
from labeling.services.annotations import annotation_submit
from labeling.services.queues import queue_checkout_next
from learning.models import ModelVersion
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def as_user(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Any) -> list[Any]:
    from celery import current_app

    settings.IMPORT_ROOT = tmp_path / "imports"
    sent: list[Any] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args: sent.append((name, args)))
    return sent


def test_new_project_from_the_editor_with_every_setting(cast: dict[str, Any]) -> None:
    client = as_user(cast["users"]["admin"])
    assert "Create project" in client.get("/projects/new/").content.decode()
    response = client.post("/projects/new/", {
        "name": "Abuse", "slug": "abuse", "overlap": "2", "strategy": "entropy", "embedder": "static",
        "gold_rate": "0.05", "seed_queries": "kill yourself\n\nyou people are\n", "taxonomy_source": "editor",
        "taxonomy_json": json.dumps(SMS_TAXONOMY)})
    assert (response.status_code, response["Location"]) == (302, "/projects/abuse/members/")
    project = Project.objects.get(slug="abuse")
    assert (project.name, project.overlap, project.strategy, project.embedder, project.gold_rate,
            project.show_suggestions, project.seed_queries) == (
        "Abuse", 2, "entropy", "static", 0.05, False, ["kill yourself", "you people are"])
    assert Membership.objects.get(project=project).role == "admin"


def test_new_project_copies_a_published_taxonomy_or_reads_an_upload(cast: dict[str, Any]) -> None:
    client = as_user(cast["users"]["admin"])
    client.post("/projects/new/", {"name": "Copy", "slug": "copy", "overlap": "1", "strategy": "default",
                                   "embedder": "minilm", "taxonomy_source": "copy", "copy_from": "sms"})
    copied = Project.objects.get(slug="copy").current_taxonomy_version
    assert copied is not None and sorted(copied.labels.values_list("key", flat=True)) == ["ham", "spam"]
    upload = SimpleUploadedFile("t.json", json.dumps({"name": "U", "labels": [{"key": "x", "name": "X"}]}).encode())
    client.post("/projects/new/", {"name": "Up", "slug": "up", "overlap": "1", "strategy": "default",
                                   "embedder": "minilm", "taxonomy_source": "upload", "taxonomy_file": upload})
    version = Project.objects.get(slug="up").current_taxonomy_version
    assert version is not None and list(version.labels.values_list("key", flat=True)) == ["x"]
    # The outsider's project is not theirs to copy: refused, nothing created.
    bad = client.post("/projects/new/", {"name": "No", "slug": "no", "overlap": "1", "strategy": "default",
                                         "embedder": "minilm", "taxonomy_source": "copy", "copy_from": "other"},
                      follow=True)
    assert "choose one of your projects to copy from" in bad.content.decode()
    assert not Project.objects.filter(slug="no").exists()


def test_new_project_errors_keep_the_form(cast: dict[str, Any]) -> None:
    client = as_user(cast["users"]["admin"])
    response = client.post("/projects/new/", {"name": "Bad", "slug": "bad", "overlap": "1", "strategy": "default",
                                              "embedder": "minilm", "taxonomy_source": "editor",
                                              "taxonomy_json": "{not json"})
    text = response.content.decode()
    assert response.status_code == 200 and "taxonomy: not valid JSON" in text and 'value="bad"' in text
    assert not Project.objects.filter(slug="bad").exists()


def test_members_page_sets_reviewer_languages_and_the_mode_audited(cast: dict[str, Any]) -> None:
    client = as_user(cast["users"]["admin"])
    client.post("/projects/sms/members/", {"action": "languages", "username": "reviewer", "languages": "ur, HI"})
    client.post("/projects/sms/members/", {"action": "language_mode", "language_mode": "only"})
    assert Membership.objects.get(project__slug="sms", user__username="reviewer").languages == ["hi", "ur"]
    assert Project.objects.get(slug="sms").language_mode == "only"
    assert AuditEvent.objects.filter(action="membership.languages").get().data["after"] == ["hi", "ur"]
    page = client.get("/projects/sms/members/").content.decode()
    assert 'value="hi, ur"' in page and '<option value="only" selected>' in page
    # A bad code is refused with its reason and changes nothing.
    response = client.post("/projects/sms/members/", {"action": "languages", "username": "reviewer",
                                                      "languages": "hindi"}, follow=True)
    assert "is not a language code" in response.content.decode()
    assert Membership.objects.get(project__slug="sms", user__username="reviewer").languages == ["hi", "ur"]


def test_members_add_create_change_and_remove_releases_leases(cast: dict[str, Any]) -> None:
    project = cast["project"]
    client = as_user(cast["users"]["admin"])
    UserFactory(username="existing")
    client.post("/projects/sms/members/", {"action": "add", "username": "existing", "role": "reviewer"})
    client.post("/projects/sms/members/", {"action": "add", "username": "newbie", "role": "policy_lead",
                                           "create": "on", "password": "a-long-enough-passphrase-42"})
    assert dict(Membership.objects.filter(project=project, user__username__in=["existing", "newbie"])
                .values_list("user__username", "role")) == {"existing": "reviewer", "newbie": "policy_lead"}
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="newbie").check_password("a-long-enough-passphrase-42")
    client.post("/projects/sms/members/", {"action": "role", "username": "existing", "role": "ml_engineer"})
    assert Membership.objects.get(project=project, user__username="existing").role == "ml_engineer"
    # A reviewer holding a lease, with an answer given: removal releases the lease and keeps the answer.
    ItemFactory.create_batch(3, project=project)
    reviewer = cast["users"]["reviewer"]
    done = queue_checkout_next(project=project, reviewer=reviewer)
    assert done is not None
    annotation_submit(lease_id=done.pk, reviewer=reviewer, labels=["spam"])
    held = queue_checkout_next(project=project, reviewer=reviewer)
    assert held is not None
    page = client.get("/projects/sms/members/").content.decode()
    assert 'data-username="reviewer"' in page
    client.post("/projects/sms/members/", {"action": "remove", "username": "reviewer"})
    assert not Membership.objects.filter(project=project, user=reviewer).exists()
    assert Lease.objects.get(pk=held.pk).state == "released"
    assert project.annotations.filter(reviewer=reviewer).count() == 1
    assert list(AuditEvent.objects.filter(project=project, action__startswith="membership.")
                .order_by("id").values_list("action", flat=True)) == [
        "membership.add", "membership.add", "membership.change", "membership.remove"]
    assert AuditEvent.objects.filter(action="membership.remove").get().data["leases_released"] == 1
    missing = client.post("/projects/sms/members/", {"action": "add", "username": "ghost", "role": "reviewer"},
                          follow=True)
    assert "no user named &#x27;ghost&#x27;" in missing.content.decode()


def test_import_page_uploads_a_job_and_shows_it(cast: dict[str, Any], no_broker: list[Any],
                                               django_capture_on_commit_callbacks: Any) -> None:
    client = as_user(cast["users"]["policy_lead"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/projects/sms/import/", {"file": SimpleUploadedFile(
            "gold.csv", b"external_id,text,label\ng,hello,spam\n"), "gold": "on"})
    assert (response.status_code, response["Location"]) == (302, "/projects/sms/import/")
    job = ImportJob.objects.get()
    assert (job.filename, job.gold, job.status, job.created_by) == ("gold.csv", True, "pending",
                                                                     cast["users"]["policy_lead"])
    assert no_broker == [("sift.labeling.import_job", [job.pk])]
    page = client.get("/projects/sms/import/").content.decode()
    assert f'data-job="{job.pk}" data-status="pending"' in page and "frontend/imports.js" in page


def test_export_page_downloads_by_redirect_and_requests_snapshots(cast: dict[str, Any], settings: Any,
                                                                  tmp_path: Any) -> None:
    settings.EXPORT_ROOT = tmp_path / "exports"
    client = as_user(cast["users"]["ml_engineer"])
    assert "Download now" in client.get("/projects/sms/export/").content.decode()
    response = client.post("/projects/sms/export/", {"action": "download", "format": "parquet", "split": "0.8,0.1,0.1",
                                                     "seed": "7", "aggregation": "majority", "name": ""})
    assert response.status_code == 302
    url = urlsplit(response["Location"])
    assert (url.path, parse_qs(url.query)) == ("/api/projects/sms/export", {
        "format": ["parquet"], "split": ["0.8,0.1,0.1"], "seed": ["7"], "aggregation": ["majority"]})
    bad = client.post("/projects/sms/export/", {"action": "download", "format": "xml"}, follow=True)
    assert "format" in bad.content.decode() and bad.redirect_chain[-1][0] == "/projects/sms/export/"
    client.post("/projects/sms/export/", {"action": "snapshot", "name": "train-1", "format": "csv"})
    snapshot = ExportSnapshot.objects.get(project=cast["project"])
    assert (snapshot.name, snapshot.format, snapshot.status) == ("train-1", "csv", "pending")
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(status="failed", error="disk full")
    page = client.get("/projects/sms/export/").content.decode()
    assert "disk full" in page and "Retry" in page
    client.post("/projects/sms/export/", {"action": "retry", "name": "train-1"})
    assert ExportSnapshot.objects.get(pk=snapshot.pk).status == "pending"


def test_models_page_lists_versions_metrics_reasons_and_the_curve(cast: dict[str, Any]) -> None:
    project = cast["project"]
    for version, n_labels, ap in ((1, 10, 0.5), (2, 20, 0.7)):
        ModelVersion.objects.create(
            project=project, version=version, status="active" if version == 2 else "retired",
            fingerprint=f"fp{version}", embedder="hashing", strategy="margin", n_labels=n_labels, n_pool=100,
            n_ranked=90, metrics={"cv": {"folds": 5, "n": n_labels, "average_precision": ap, "macro_f1": 0.6},
                                  "exploration": None, "class_counts": {"ham": 6, "spam": 4}})
    ItemFactory.create_batch(2, project=project)
    lease = queue_checkout_next(project=project, reviewer=cast["users"]["reviewer"])
    assert lease is not None
    Lease.objects.filter(pk=lease.pk).update(model_version=2, selection_reason="uncertainty")
    page = as_user(cast["users"]["ml_engineer"]).get("/projects/sms/models/").content.decode()
    assert 'data-version="2"' in page and 'data-version="1"' in page
    assert "average_precision 0.7" in page and "ham 6" in page
    assert "<polyline" in page
    assert "Uncertainty: 1" in page or "uncertainty: 1" in page.lower()


def test_settings_page_changes_what_may_change_and_explains_the_rest(cast: dict[str, Any],
                                                                     django_capture_on_commit_callbacks: Any) -> None:
    project = cast["project"]
    client = as_user(cast["users"]["admin"])
    page = client.get("/projects/sms/settings/").content.decode()
    assert "Vectors, rankings and models are keyed by it" in page and 'id="s-strategy"' in page
    form = {"name": "SMS (renamed)", "description": "d", "strategy": "entropy", "exploration_rate": "0.2",
            "gold_rate": "0.1", "suggestion_holdout_rate": "0.05", "lease_seconds": "300",
            "seed_queries": "a\nb"}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post("/projects/sms/settings/", form)
    project.refresh_from_db()
    assert (project.name, project.strategy, project.exploration_rate, project.gold_rate, project.show_suggestions,
            project.suggestion_holdout_rate, project.lease_seconds, project.seed_queries) == (
        "SMS (renamed)", "entropy", 0.2, 0.1, False, 0.05, 300, ["a", "b"])
    assert len(callbacks) == 1  # the retrain request, once committed
    event = AuditEvent.objects.filter(action="project.settings").get()
    assert event.data["strategy"] == {"from": "default", "to": "entropy"}
    bad = client.post("/projects/sms/settings/", {**form, "gold_rate": "0.9"}, follow=True)
    assert "gold_rate" in bad.content.decode()
    project.refresh_from_db()
    assert project.gold_rate == 0.1 and AuditEvent.objects.filter(action="project.settings").count() == 1
