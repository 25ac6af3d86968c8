"""sift_client against a live server (a real HTTP server thread on a free port, PostgreSQL behind it).

Every call of CONTRACT.md's Python client goes over HTTP: create_project (with and without embedder), imports
from a DataFrame, a list of dicts and files (.jsonl, .csv, .parquet, .jsonl.gz), export to a DataFrame with the
exact rows in each format, stats, models, and the errors a caller meets (SiftError with status and detail).
"""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rest_framework.authtoken.models import Token
from sift_client import Client, SiftError

from labeling.models import Item, Project
from labeling.services.annotations import annotation_submit
from labeling.services.queues import queue_checkout_next
from tests.conftest import SMS_TAXONOMY, add_project_permission
from tests.factories import UserFactory, member

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PASSWORD = "correct-horse-battery"  # tests/factories.py's UserFactory


@pytest.fixture
def admin(postgres_only: None, transactional_db: Any) -> Any:
    user = UserFactory(username="site-admin")
    user.user_permissions.add(add_project_permission())
    return user


def contract_keys(body: dict[str, Any]) -> dict[str, Any]:
    """The summary's CONTRACT keys; the server adds ``languages`` (#20), whose figures the language tests own."""
    assert set(body) == {"created", "updated", "unchanged", "errors", "languages"}, body
    return {key: body[key] for key in ("created", "updated", "unchanged", "errors")}


def summary(created: int = 0, updated: int = 0, unchanged: int = 0, errors: Any = ()) -> dict[str, Any]:
    return {"created": created, "updated": updated, "unchanged": unchanged, "errors": list(errors)}


def test_a_notebook_session_from_project_to_training_set(admin: Any, live_server: Any, tmp_path: Path) -> None:
    c = Client(live_server.url, username="site-admin", password=PASSWORD)
    created = c.create_project("notebook", "Notebook", SMS_TAXONOMY, overlap=1, embedder="hashing")
    assert (created["slug"], created["role"], created["embedder"], created["overlap"]) == (
        "notebook", "admin", "hashing", 1)
    assert [p["slug"] for p in c.projects()] == ["notebook"]
    assert c.project("notebook")["taxonomy_version"] == 1

    frame = pd.DataFrame({"external_id": ["d1", "d2"], "text": ["WIN a prize now", "see you at lunch"],
                          "channel": ["sms", "email"], "score": [0.9, float("nan")]})
    assert contract_keys(c.import_items("notebook", frame)) == summary(created=2)
    assert contract_keys(c.import_items("notebook", [{"external_id": "l1", "text": "call me", "meta": {"k": 1}},
                                       {"external_id": "l2", "text": "free cash", "lang": "en"},
                                       {"external_id": "l3"}])) == summary(
        created=2, errors=[{"line": 3, "error": "text: required"}])
    (tmp_path / "a.jsonl").write_text(json.dumps({"external_id": "j1", "text": "from jsonl"}) + "\n")
    (tmp_path / "b.csv").write_text("external_id,text,source\nc1,from csv,upload\n")
    pq.write_table(pa.table({"external_id": ["p1"], "text": ["from parquet"], "meta": [{"n": 3}]}),
                   tmp_path / "c.parquet")
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(b'{"external_id": "g1", "text": "from gzip"}\n'))
    for name in ("a.jsonl", "b.csv", "c.parquet", "d.jsonl.gz"):
        assert contract_keys(c.import_items("notebook", tmp_path / name)) == summary(created=1), name
    assert contract_keys(c.import_items("notebook", str(tmp_path / "c.parquet"))) == summary(unchanged=1)
    project = Project.objects.get(slug="notebook")
    assert dict(Item.objects.filter(project=project).values_list("external_id", "meta")) == {
        "d1": {"channel": "sms", "score": 0.9}, "d2": {"channel": "email", "score": None},
        "l1": {"k": 1}, "l2": {"lang": "en"}, "j1": {}, "c1": {"source": "upload"}, "p1": {"n": 3}, "g1": {}}

    # A reviewer labels three items (through the services; the client is an engineer's tool).
    reviewer = member(project, username="rev", role="reviewer")
    answers = {}
    for label in ("spam", "ham", "spam"):
        lease = queue_checkout_next(project=project, reviewer=reviewer)
        assert lease is not None
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=[label])
        answers[lease.item.external_id] = label

    exported = c.export("notebook")  # parquet by default
    assert sorted(exported["external_id"]) == sorted(answers)
    by_id = exported.set_index("external_id")
    for external_id, label in answers.items():
        row = by_id.loc[external_id]
        item = Item.objects.get(project=project, external_id=external_id)
        assert (list(row["labels"]), row["label_source"], row["n_annotators"], row["text"], json.loads(row["meta"]),
                row["taxonomy_version"]) == ([label], "majority", 1, item.text, item.meta, 1)
    jsonl = c.export("notebook", format="jsonl").set_index("external_id")
    csv = c.export("notebook", format="csv").set_index("external_id")
    for external_id, label in answers.items():
        assert jsonl.loc[external_id, "labels"] == [label]
        assert json.loads(csv.loc[external_id, "labels"]) == [label]
        assert csv.loc[external_id, "text"] == by_id.loc[external_id, "text"]
    split = c.export("notebook", split="0.5,0.25,0.25", seed=3)
    assert sorted(split["external_id"]) == sorted(answers)
    assert set(split["split"]) <= {"train", "validation", "test"}
    assert split.set_index("external_id")["split"].to_dict() == c.export(
        "notebook", split="0.5,0.25,0.25", seed=3).set_index("external_id")["split"].to_dict()

    stats = c.stats("notebook")
    assert stats["project"] == "notebook"
    assert {key: stats["progress"][key] for key in ("items", "gold_items", "finished", "labelled", "annotations",
                                                    "reviewers")} == {
        "items": 8, "gold_items": 0, "finished": 3, "labelled": 3, "annotations": 3, "reviewers": 1}
    assert c.models("notebook") == []  # no worker in this test: no model yet


def test_token_login_and_errors(admin: Any, live_server: Any) -> None:
    with pytest.raises(SiftError) as wrong:
        Client(live_server.url, username="site-admin", password="wrong")
    assert wrong.value.status == 400
    c = Client(live_server.url, token=Token.objects.create(user=admin).key)
    with pytest.raises(SiftError) as missing:
        c.stats("nope")
    assert missing.value.status == 404
    c.create_project("errs", "Errors", SMS_TAXONOMY)
    assert c.project("errs")["embedder"] == "minilm"  # the old form keeps the server's default
    with pytest.raises(SiftError) as taken:
        c.create_project("errs", "Again", SMS_TAXONOMY)
    assert taken.value.status == 409
    with pytest.raises(SiftError) as bad_embedder:
        c.create_project("errs2", "Bad", SMS_TAXONOMY, embedder="word2vec")
    assert (bad_embedder.value.status, bad_embedder.value.detail.split(";")[0]) == (
        400, "embedder: unknown embedder 'word2vec'")
    with pytest.raises(SiftError) as atomic:
        c.import_items("errs", [{"external_id": "a", "text": "fine"}, {"external_id": "b"}], atomic=True)
    assert atomic.value.status == 400
    assert (atomic.value.body["code"], atomic.value.body["errors"]) == (
        "invalid_rows", [{"line": 2, "error": "text: required"}])
    assert Item.objects.filter(project__slug="errs").count() == 0
    with pytest.raises(ValueError, match="missing: text"):
        c.import_items("errs", pd.DataFrame({"external_id": ["x"]}))

    project = Project.objects.get(slug="errs")
    member(project, username="only-reviewer", role="reviewer")
    as_reviewer = Client(live_server.url, username="only-reviewer", password=PASSWORD)
    with pytest.raises(SiftError) as denied:
        as_reviewer.import_items("errs", [{"external_id": "r", "text": "no"}])
    assert denied.value.status == 403
    with pytest.raises(SiftError) as not_creator:
        as_reviewer.create_project("mine", "Mine", SMS_TAXONOMY)
    assert (not_creator.value.status, not_creator.value.detail) == (
        403, "you may not create projects; ask a Sift administrator")
    assert Item.objects.filter(project=project).count() == 0


def test_an_unreachable_server_is_status_0() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}", token="x", timeout=5)
    with pytest.raises(SiftError) as info:
        c.projects()
    assert info.value.status == 0
    assert info.value.detail.startswith(f"could not reach http://127.0.0.1:{port}")
