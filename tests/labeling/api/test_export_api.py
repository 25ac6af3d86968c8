"""The export endpoints: streamed rows, snapshots with cards and checksums, and who may do what."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from labeling.models import AuditEvent, ExportSnapshot, Item
from tests.factories import member
from tests.labeling.services.test_export_roundtrip import EXPECTED, World, build_world, export_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(settings: Any, tmp_path: Path) -> World:
    settings.EXPORT_ROOT = tmp_path / "exports"
    w = build_world()
    member(w.project, username="boss", role="admin")
    member(w.project, username="lead", role="policy_lead")
    from tests.factories import ProjectFactory

    other = ProjectFactory(slug="elsewhere")
    member(other, username="stranger", role="admin")
    return w


def user(name: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=name)


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def state(world: World, tmp_path: Path) -> tuple[Any, ...]:
    files = sorted(str(p) for p in (tmp_path / "exports").rglob("*")) if (tmp_path / "exports").exists() else []
    return (AuditEvent.objects.count(), ExportSnapshot.objects.count(),
            list(Item.objects.order_by("id").values_list("split", flat=True)), files)


def test_ml_engineer_streams_the_same_bytes_as_the_service(world: World, api_as: Any) -> None:
    response = api_as(user("engineer")).get("/api/projects/sms-export/export?format=jsonl&raw=1")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == 'attachment; filename="sms-export.jsonl"'
    data = body(response)
    assert data == export_bytes(world.project, format="jsonl", raw="1")
    assert [json.loads(line)["external_id"] for line in data.decode().splitlines()] == [
        e["external_id"] for e in EXPECTED]
    assert AuditEvent.objects.filter(action="export.run", actor=user("engineer")).count() == 1


def test_csv_and_parquet_stream(world: World, api_as: Any) -> None:
    client = api_as(user("boss"))
    csv_response = client.get("/api/projects/sms-export/export", {"format": "csv", "gold": "exclude"})
    assert csv_response["Content-Type"] == "text/csv; charset=utf-8"
    assert body(csv_response).decode().splitlines()[0].startswith("external_id,text,content_hash,meta,labels")
    parquet_response = client.get("/api/projects/sms-export/export", {"format": "parquet"})
    chunks = list(parquet_response.streaming_content)
    assert len(chunks) >= 2 and chunks[0] == b"PAR1"
    table = pq.read_table(io.BytesIO(b"".join(chunks)))
    assert table.num_rows == len(EXPECTED)


def test_splits_via_the_api_are_persisted(world: World, api_as: Any) -> None:
    response = api_as(user("engineer")).get("/api/projects/sms-export/export",
                                            {"format": "jsonl", "split": "0.5,0.25,0.25", "seed": "1"})
    rows = [json.loads(line) for line in body(response).decode().splitlines()]
    stored = dict(Item.objects.filter(project=world.project).values_list("external_id", "split"))
    assert {r["external_id"]: r["split"] for r in rows} == {k: v for k, v in stored.items() if k != "m7"}
    assert stored["m7"] is None
    assert {r["split"] for r in rows} <= {"train", "validation", "test"}


@pytest.mark.parametrize(("query", "status", "detail"), [
    ({"format": "xml"}, 400, "format: 'xml' is not one of jsonl, csv, parquet"),
    ({"fromat": "csv"}, 400, "unknown parameter(s): fromat; allowed: format, aggregation, split, seed, raw, gold, "
                             "taxonomy_version, since, until, reviewer, min_agreement, min_annotators, label, "
                             "csv_cells, language, propagated"),
    ({"item__text__contains": "x"}, 400, None),
    ({"language": "hindi"}, 400, "language: 'hindi' is not a language code (ISO 639, as the language list shows "
                                 "them; und for undetermined)"),
    ({"split": "0.9,0.2,0"}, 400, "split: fractions must be >= 0 and sum to 1, got '0.9,0.2,0'"),
    ({"label": "nope"}, 400, "label: nope not in taxonomy version 2"),
    ({"reviewer": "stranger"}, 400, "reviewer: no reviewer of this project named stranger"),
    ({"taxonomy_version": "9"}, 400, "taxonomy_version: this project has no published version 9"),
    ({"since": "yesterday"}, 400, "since: 'yesterday' is not an ISO date or datetime"),
    ({"min_agreement": "2"}, 400, "min_agreement: must be between 0 and 1"),
])
def test_bad_parameters_are_named_and_change_nothing(world: World, api_as: Any, tmp_path: Path,
                                                     query: dict[str, str], status: int, detail: str | None) -> None:
    before = state(world, tmp_path)
    response = api_as(user("engineer")).get("/api/projects/sms-export/export", query)
    assert response.status_code == status
    if detail is not None:
        assert response.json()["detail"] == detail
    assert state(world, tmp_path) == before


@pytest.mark.parametrize(("who", "status"), [("alice", 403), ("lead", 403), ("stranger", 404), (None, 401)])
@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/projects/sms-export/export?format=jsonl&split=0.8,0.1,0.1"),
    ("get", "/api/projects/sms-export/exports/"),
    ("post", "/api/projects/sms-export/exports/"),
    ("get", "/api/projects/sms-export/exports/v1/"),
    ("get", "/api/projects/sms-export/exports/v1/download"),
])
def test_only_export_roles_and_nothing_is_written_otherwise(world: World, api_as: Any, tmp_path: Path, who: str | None,
                                                            status: int, method: str, path: str) -> None:
    api_as(user("engineer")).post("/api/projects/sms-export/exports/", {"name": "v1", "format": "csv"},
                                  format="json")
    before = state(world, tmp_path)
    client = api_as(user(who) if who else None)
    if method == "post":
        response = client.post(path, {"name": "v2", "format": "jsonl", "split": "0.8,0.1,0.1"}, format="json")
    else:
        response = client.get(path)
    assert response.status_code == status
    assert not getattr(response, "streaming", False)
    assert state(world, tmp_path) == before


def run_queued(callbacks: list[Any]) -> None:
    """Play the worker: what each queued on_commit callback would have sent, run by the real task."""
    from labeling.tasks import export_snapshot

    assert len(callbacks) == 1
    for snapshot in ExportSnapshot.objects.filter(status=ExportSnapshot.Status.PENDING).order_by("id"):
        export_snapshot.apply(args=[snapshot.project_id, snapshot.name, snapshot.params, snapshot.created_by_id]).get()


def test_snapshot_request_status_detail_download(world: World, api_as: Any, tmp_path: Path,
                                                 django_capture_on_commit_callbacks: Any) -> None:
    client = api_as(user("engineer"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/api/projects/sms-export/exports/",
                               {"name": "train-2024-05", "format": "parquet", "split": "0.5,0.25,0.25", "seed": 4,
                                "aggregation": "majority", "raw": True}, format="json")
    assert response.status_code == 202, response.content
    queued = response.json()
    status_url = "/api/projects/sms-export/exports/train-2024-05/"
    assert response["Location"] == status_url
    assert (queued["status"], queued["status_url"], queued["error"], queued["sha256"], queued["row_count"],
            queued["card"]) == ("pending", status_url, "", "", None, {})
    assert queued["id"] == ExportSnapshot.objects.get(name="train-2024-05").pk
    # Nothing is exported in the request: no file, no split assigned yet.
    assert not (tmp_path / "exports").exists()
    assert set(Item.objects.values_list("split", flat=True)) == {None}
    assert client.get(status_url + "download").status_code == 409
    assert [(s["name"], s["status"]) for s in client.get("/api/projects/sms-export/exports/").json()] == [
        ("train-2024-05", "pending")]

    run_queued(callbacks)
    created = client.get(status_url).json()
    assert (created["status"], created["attempts"], created["error"]) == ("done", 1, "")
    snapshot = ExportSnapshot.objects.get(project=world.project, name="train-2024-05")
    path = Path(tmp_path / "exports") / snapshot.path
    data = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o444
    assert (created["sha256"], created["size_bytes"], created["row_count"]) == (
        hashlib.sha256(data).hexdigest(), len(data), len(EXPECTED))
    assert created["params"] == {
        "format": "parquet", "aggregation": "majority", "split": [0.5, 0.25, 0.25], "seed": 4, "raw": True,
        "gold": "flag", "taxonomy_version": None, "since": None, "until": None, "reviewers": [],
        "min_agreement": None, "min_annotators": None, "labels": []}
    card = created["card"]
    assert card["rows"] == 8
    assert card["annotations"] == 15
    assert card["gold_rows"] == 2
    assert card["label_distribution"] == {"ham": 3, "spam": 2, "fraud": 1, "(no label)": 2}
    assert card["label_sources"] == {"adjudication": 1, "majority": 5, "tie": 2}
    assert card["agreement"]["mean"] == 0.625  # m5: one readable answer of two agrees (0.5, not 1.0)
    assert card["agreement"]["full_agreement_share"] == 0.5  # 4 of 8 rows; m5 no longer counts as full
    assert card["taxonomy_version"] == 2
    assert card["annotation_taxonomy_versions"] == {"1": 3, "2": 12}
    assert (card["annotations_mapped"], card["annotations_unmappable"]) == (2, 1)
    assert card["date_range"] == {"first_annotation": "2024-05-01T10:01:00+00:00",
                                  "last_annotation": "2024-05-01T10:15:00+00:00"}
    assert sum(card["splits"].values()) == 8
    assert card["splits_newly_assigned"] == card["splits"]
    assert card["sha256"] == created["sha256"]
    assert "| ham | 3 |" in created["card_markdown"]
    assert "# Dataset card: sms-export / train-2024-05" in created["card_markdown"]
    audit = AuditEvent.objects.get(action="export.snapshot")
    assert (audit.actor, audit.data["sha256"], audit.data["rows"]) == (user("engineer"), created["sha256"], 8)
    assert AuditEvent.objects.filter(action="export.snapshot_request", actor=user("engineer")).count() == 1

    listing = client.get("/api/projects/sms-export/exports/").json()
    assert [(s["name"], s["format"], s["status"], s["sha256"], s["created_by"]) for s in listing] == [
        ("train-2024-05", "parquet", "done", created["sha256"], "engineer")]
    download = client.get(status_url + "download")
    assert download.status_code == 200
    assert download["X-Checksum-SHA256"] == created["sha256"]
    assert b"".join(download.streaming_content) == data
    assert pq.read_table(io.BytesIO(data)).num_rows == 8
    # A done snapshot is immutable: nothing to retry.
    assert client.post(status_url + "retry").status_code == 409
    # The same parameters again give the same bytes: the snapshot is reproducible.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.post("/api/projects/sms-export/exports/",
                           {"name": "train-again", "format": "parquet", "split": "0.5,0.25,0.25", "seed": 4,
                            "raw": True}, format="json").status_code == 202
    run_queued(callbacks)
    assert ExportSnapshot.objects.get(name="train-again").sha256 == created["sha256"]


def test_a_failed_snapshot_says_why_and_can_be_retried(world: World, api_as: Any, tmp_path: Path, settings: Any,
                                                      django_capture_on_commit_callbacks: Any) -> None:
    client = api_as(user("engineer"))
    # A real failure: the export root cannot be created, because a file stands where its parent should be.
    (tmp_path / "blocked").write_text("not a directory")
    settings.EXPORT_ROOT = tmp_path / "blocked" / "exports"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.post("/api/projects/sms-export/exports/", {"name": "v1", "format": "csv", "split": "0.8,0.1,0.1"},
                           format="json").status_code == 202
    run_queued(callbacks)
    failed = client.get("/api/projects/sms-export/exports/v1/").json()
    assert (failed["status"], failed["attempts"], failed["sha256"], failed["row_count"]) == ("failed", 1, "", None)
    assert failed["error"].startswith("NotADirectoryError: ")
    assert failed["finished_at"] is not None
    assert [(s["name"], s["status"], s["error"]) for s in client.get("/api/projects/sms-export/exports/").json()] == [
        ("v1", "failed", failed["error"])]
    assert client.get("/api/projects/sms-export/exports/v1/download").status_code == 409
    assert not AuditEvent.objects.filter(action="export.snapshot").exists()

    settings.EXPORT_ROOT = tmp_path / "exports"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = client.post("/api/projects/sms-export/exports/v1/retry")
    assert retried.status_code == 202
    assert retried.json()["status"] == "pending"
    # Queued already: a second retry is refused and queues nothing.
    with django_capture_on_commit_callbacks(execute=False) as again:
        assert client.post("/api/projects/sms-export/exports/v1/retry").status_code == 409
    assert again == []
    run_queued(callbacks)
    done = client.get("/api/projects/sms-export/exports/v1/").json()
    assert (done["status"], done["attempts"], done["error"], done["row_count"]) == ("done", 2, "", len(EXPECTED))
    assert client.get("/api/projects/sms-export/exports/v1/download").status_code == 200
    assert AuditEvent.objects.filter(action="export.snapshot_retry", actor=user("engineer")).count() == 1


def test_duplicate_or_bad_snapshot_names(world: World, api_as: Any, tmp_path: Path) -> None:
    client = api_as(user("engineer"))
    assert client.post("/api/projects/sms-export/exports/", {"name": "v1"}, format="json").status_code == 202
    before = state(world, tmp_path)
    duplicate = client.post("/api/projects/sms-export/exports/", {"name": "v1", "format": "csv"}, format="json")
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"] == "a snapshot named 'v1' already exists"
    bad = client.post("/api/projects/sms-export/exports/", {"name": "../../etc", "format": "csv"}, format="json")
    assert bad.status_code == 400
    unknown = client.post("/api/projects/sms-export/exports/", {"name": "v3", "colour": "red"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["field"] == "colour"
    # Checked against the project before anything is queued.
    label = client.post("/api/projects/sms-export/exports/", {"name": "v4", "label": "nope"}, format="json")
    assert (label.status_code, label.json()["detail"]) == (400, "label: nope not in taxonomy version 2")
    missing = client.get("/api/projects/sms-export/exports/nope/download")
    assert missing.status_code == 404
    assert client.post("/api/projects/sms-export/exports/nope/retry").status_code == 404
    assert state(world, tmp_path) == before
