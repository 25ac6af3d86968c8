"""Hard deletion on request (labeling/services/privacy.py ``items_delete``): API, command, what goes, what stays."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command

from labeling.models import (
    Adjudication,
    Annotation,
    AuditEvent,
    ExportSnapshot,
    Item,
    Lease,
    Project,
    RankingEntry,
    RankingRow,
)
from labeling.services.adjudication import adjudication_decide, adjudication_open
from labeling.services.annotations import annotation_submit
from labeling.services.audit import audit_verify
from labeling.services.exports import export_params_parse, export_prepare, export_snapshot_create, export_stream
from labeling.services.privacy import external_id_digest
from labeling.services.queues import queue_checkout_next
from learning.models import Embedding
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

SECRET = "call me on +44 20 7946 0958, jane"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path) -> list[int]:
    retrains: list[int] = []
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: retrains.append(project_id))
    settings.EXPORT_ROOT = tmp_path / "exports"
    cache.clear()
    return retrains


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _vector(text: str, embedder: str = "hashing-v1-64") -> Embedding:
    return Embedding.objects.create(embedder=embedder, content_hash=_h(text), vector=b"\x00\x01")


def _label(project: Project, user: Any, labels: list[str], comment: str = "") -> Lease:
    lease = queue_checkout_next(project=project, reviewer=user)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=user, labels=labels, comment=comment)
    return lease


@pytest.fixture
def world(cast: dict[str, Any]) -> dict[str, Any]:
    """Item "doomed" with two answers, an adjudication, a ranking entry, vectors and a snapshot; item "kept"
    beside it; and the same text as "doomed" in another project (its vector must stay)."""
    project: Project = cast["project"]
    Project.objects.filter(pk=project.pk).update(overlap=2)
    project.refresh_from_db()
    doomed = ItemFactory(project=project, external_id="doomed", text=SECRET, meta={"who": "jane"}, n_required=2)
    _vector(SECRET)
    _vector(SECRET, embedder="minilm-l6")
    _label(project, cast["users"]["reviewer"], ["spam"], comment="jane again")
    _label(project, cast["users"]["policy_lead"], ["ham"])
    kept = ItemFactory(project=project, external_id="kept", text="harmless words", n_required=2)
    _vector("harmless words")
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=3, start_rank=0, rows=[
        RankingRow(item_id=kept.pk, score=0.5, reason="uncertainty", inclusion_probability=1.0,
                   suggested_label="", suggested_confidence=None),
        RankingRow(item_id=doomed.pk, score=0.4, reason="uncertainty", inclusion_probability=1.0,
                   suggested_label="", suggested_confidence=None)])
    adjudication, _ = adjudication_open(actor=cast["users"]["policy_lead"], project=project, external_id="doomed",
                                        note="jane's number is in it")
    adjudication_decide(actor=cast["users"]["policy_lead"], project=project, adjudication_id=adjudication.pk,
                        labels=["spam"], note="jane's number again")
    assert Adjudication.objects.filter(item=doomed).exists()
    snapshot = export_snapshot_create(project=project, actor=None, name="before-deletion",
                                      params=export_params_parse({"format": "jsonl"}))
    other = ItemFactory(project=cast["other_project"], external_id="twin", text=SECRET)
    return {"project": project, "doomed": doomed, "kept": kept, "snapshot": snapshot, "twin": other, **cast}


def _export_ids(project: Project) -> list[str]:
    prepared = export_prepare(project=project, params=export_params_parse({"format": "jsonl"}), actor=None,
                              audit=False)
    return [json.loads(line)["external_id"] for line in b"".join(export_stream(prepared)).decode().splitlines()]


def test_delete_removes_content_everywhere_and_leaves_a_tombstone(world: dict[str, Any], api_as: Any,
                                                                  settings: Any, _quiet: list[int],
                                                                  django_capture_on_commit_callbacks: Any) -> None:
    project, doomed, kept = world["project"], world["doomed"], world["kept"]
    snapshot_file = Path(settings.EXPORT_ROOT) / world["snapshot"].path
    assert snapshot_file.is_file() and "doomed" in snapshot_file.read_text()
    assert _export_ids(project) == ["doomed"]
    annotations = Annotation.objects.filter(item=doomed).count()
    assert annotations == 2
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(world["users"]["admin"]).post(
            "/api/projects/sms/items/delete", {"external_ids": ["doomed", "never-was"], "reason": "GDPR art. 17"},
            format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    tombstone = AuditEvent.objects.get(action="items.delete")
    assert body == {"deleted": 1, "annotations_deleted": 2, "not_found": ["never-was"],
                    "snapshots_purged": ["before-deletion"], "tombstones": [tombstone.pk]}
    # The content is gone: item, answers, leases, adjudication, ranking entry, its vectors, the snapshot.
    assert not Item.objects.filter(pk=doomed.pk).exists()
    assert not Annotation.objects.filter(item_id=doomed.pk).exists()
    assert not Lease.objects.filter(item_id=doomed.pk).exists()
    assert not Adjudication.objects.filter(item_id=doomed.pk).exists()
    assert list(RankingEntry.objects.filter(project_id=project.pk).values_list("item_id", flat=True)) == [kept.pk]
    assert not ExportSnapshot.objects.filter(project=project).exists()
    assert not snapshot_file.exists()
    assert _export_ids(project) == []
    # A vector another project's item still needs stays; the deleted item's others go.
    assert sorted(Embedding.objects.values_list("content_hash", "embedder")) == sorted(
        [(_h(SECRET), "hashing-v1-64"), (_h(SECRET), "minilm-l6"), (_h("harmless words"), "hashing-v1-64")])
    # Nothing else changed.
    assert Item.objects.filter(pk=kept.pk).exists() and Item.objects.filter(pk=world["twin"].pk).exists()
    # The tombstone: who, when, why, which item; never the content or the external id itself.
    assert (tombstone.actor_id, tombstone.project_id) == (world["users"]["admin"].pk, project.pk)
    assert tombstone.data == {
        "trigger": "request", "reason": "GDPR art. 17",
        "items": [{"id": doomed.pk, "external_id_sha256": external_id_digest(project, "doomed")}],
        "annotations_deleted": 2,
        "snapshots_purged": [{"name": "before-deletion", "sha256": world["snapshot"].sha256}]}
    dumped = json.dumps(tombstone.data)
    assert "jane" not in dumped and "7946" not in dumped and '"doomed"' not in dumped
    # No row the deletion leaves behind carries the content, the external id or a note about it.
    everything = json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))
    assert AuditEvent.objects.filter(action__startswith="adjudication.").count() == 2
    assert "jane" not in everything and '"doomed"' not in everything
    assert audit_verify().ok
    assert _quiet[-1] == project.pk  # a retrain was requested: the model must forget the deleted labels


def test_the_last_item_with_a_text_takes_its_vectors_along(world: dict[str, Any], api_as: Any) -> None:
    Item.objects.filter(pk=world["twin"].pk).delete()  # the other project no longer has the same text
    response = api_as(world["users"]["admin"]).post(
        "/api/projects/sms/items/delete", {"external_ids": ["doomed"], "reason": "request"}, format="json")
    assert response.status_code == 200
    assert list(Embedding.objects.values_list("content_hash", flat=True)) == [_h("harmless words")]


def test_a_repeated_request_deletes_nothing_more_and_says_so(world: dict[str, Any], api_as: Any) -> None:
    client = api_as(world["users"]["admin"])
    first = client.post("/api/projects/sms/items/delete", {"external_ids": ["doomed"], "reason": "r"}, format="json")
    assert first.json()["deleted"] == 1
    tombstones = AuditEvent.objects.filter(action="items.delete").count()
    again = client.post("/api/projects/sms/items/delete", {"external_ids": ["doomed"], "reason": "r"}, format="json")
    assert again.status_code == 200
    assert again.json() == {"deleted": 0, "annotations_deleted": 0, "not_found": ["doomed"],
                            "snapshots_purged": [], "tombstones": []}
    assert AuditEvent.objects.filter(action="items.delete").count() == tombstones


@pytest.mark.parametrize(("who", "status"), [("policy_lead", 403), ("ml_engineer", 403), ("reviewer", 403),
                                             ("outsider", 404), ("anonymous", 401)])
def test_deletion_is_refused_to_everyone_but_admins_and_changes_nothing(world: dict[str, Any], api_as: Any,
                                                                        who: str, status: int) -> None:
    counts = (Item.objects.count(), Annotation.objects.count(), Embedding.objects.count(),
              ExportSnapshot.objects.count(), AuditEvent.objects.count())
    response = api_as(world["users"][who]).post(
        "/api/projects/sms/items/delete", {"external_ids": ["doomed"], "reason": "r"}, format="json")
    assert response.status_code == status
    assert (Item.objects.count(), Annotation.objects.count(), Embedding.objects.count(),
            ExportSnapshot.objects.count(), AuditEvent.objects.count()) == counts


@pytest.mark.parametrize(("body", "field"), [
    ({"external_ids": ["doomed"]}, "reason"),
    ({"external_ids": ["doomed"], "reason": "   "}, "reason"),
    ({"external_ids": [], "reason": "r"}, "external_ids"),
    ({"external_ids": "doomed", "reason": "r"}, "external_ids"),
])
def test_bad_requests_are_400_and_delete_nothing(world: dict[str, Any], api_as: Any, body: dict[str, Any],
                                                 field: str) -> None:
    items = Item.objects.count()
    response = api_as(world["users"]["admin"]).post("/api/projects/sms/items/delete", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert Item.objects.count() == items


def test_an_admin_of_another_project_cannot_delete_here(world: dict[str, Any], api_as: Any) -> None:
    # "outsider" is admin of the other project: naming this project's item through their own slug finds nothing.
    response = api_as(world["users"]["outsider"]).post(
        "/api/projects/other/items/delete", {"external_ids": ["doomed"], "reason": "r"}, format="json")
    assert response.status_code == 200
    assert response.json()["not_found"] == ["doomed"]
    assert Item.objects.filter(pk=world["doomed"].pk).exists()


def test_command_deletes_by_id_and_by_file(world: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    project = world["project"]
    extra = [ItemFactory(project=project, external_id=f"file-{i}", text=f"file text {i}") for i in range(3)]
    listing = tmp_path / "ids.txt"
    listing.write_text("file-0\n\nfile-1\n  file-2  \n", encoding="utf-8")
    call_command("delete_items", "--project", "sms", "--external-id", "doomed", "--file", str(listing),
                 "--reason", "ticket 42")
    summary = json.loads(capsys.readouterr().out)
    assert (summary["deleted"], summary["annotations_deleted"], summary["not_found"]) == (4, 2, [])
    assert not Item.objects.filter(pk__in=[world["doomed"].pk, *[i.pk for i in extra]]).exists()
    tombstone = AuditEvent.objects.get(action="items.delete")
    assert tombstone.actor_id is None and tombstone.data["reason"] == "ticket 42"
    assert len(tombstone.data["items"]) == 4
    with pytest.raises(SystemExit) as exited:
        call_command("delete_items", "--project", "sms", "--external-id", "doomed", "--reason", "again")
    assert exited.value.code == 1
    assert json.loads(capsys.readouterr().out)["not_found"] == ["doomed"]


def test_deleting_many_items_commits_in_batches(cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from labeling.services import privacy

    monkeypatch.setattr(privacy, "DELETE_BATCH", 4)
    project = cast["project"]
    for i in range(10):
        ItemFactory(project=project, external_id=f"bulk-{i}", text=f"bulk {i}")
    result = privacy.items_delete(actor=None, project=project, external_ids=[f"bulk-{i}" for i in range(10)],
                                  reason="bulk")
    assert (result.deleted, len(result.tombstones)) == (10, 3)
    assert not Item.objects.filter(project=project).exists()
    assert audit_verify(project=project).ok
