"""POST /api/projects/{slug}/items/import: multipart and ndjson bodies, flags, limits and role checks."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import AuditEvent, Item

pytestmark = pytest.mark.django_db

URL = "/api/projects/sms/items/import"
ROWS = [{"external_id": "a", "text": "hello there"}, {"external_id": "b", "text": "WIN cash now", "meta": {"n": 1}},
        {"external_id": "c"}]
BODY = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
SUMMARY = {"created": 2, "updated": 0, "unchanged": 0, "errors": [{"line": 3, "error": "text: required"}]}


def contract(body: dict[str, Any]) -> dict[str, Any]:
    """The contract's summary keys (and any error fields); the added ``languages`` key has its own tests below."""
    return {k: v for k, v in body.items() if k != "languages"}


def items(project: Any) -> dict[str, tuple[str, Any]]:
    return {ext: (text, meta) for ext, text, meta in
            Item.objects.filter(project=project).values_list("external_id", "text", "meta")}


def upload(name: str, content: bytes) -> dict[str, Any]:
    return {"file": SimpleUploadedFile(name, content, content_type="application/octet-stream")}


@pytest.mark.parametrize("role", ["policy_lead", "ml_engineer", "admin"])
def test_multipart_jsonl_upload_imports_and_answers_the_summary(cast: dict[str, Any], api_as: Any, role: str) -> None:
    response = api_as(cast["users"][role]).post(URL, upload("items.jsonl", BODY), format="multipart")
    assert response.status_code == 200, response.content
    assert contract(response.json()) == SUMMARY
    # Two English rows: nothing to recommend (the project stays on its English embedder).
    assert response.json()["languages"] == {"counts": {"en": 2}, "undetermined": 0, "recommended_embedder": None}
    assert items(cast["project"]) == {"a": ("hello there", {}), "b": ("WIN cash now", {"n": 1})}
    event = AuditEvent.objects.filter(action="items.import").get()
    assert (event.actor_id, event.project_id, event.data["filename"]) == (
        cast["users"][role].pk, cast["project"].pk, "items.jsonl")


def test_multipart_gzipped_csv_upload(cast: dict[str, Any], api_as: Any) -> None:
    csv_body = gzip.compress(b"external_id,text,channel\nx,first,sms\ny,second,email\n")
    response = api_as(cast["users"]["policy_lead"]).post(URL, upload("batch.csv.gz", csv_body), format="multipart")
    assert response.status_code == 200, response.content
    assert contract(response.json()) == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}
    assert items(cast["project"]) == {"x": ("first", {"channel": "sms"}), "y": ("second", {"channel": "email"})}


def test_multipart_file_without_a_known_extension_is_sniffed(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL, upload("export", b"external_id,text\nq,from csv\n"),
                                                   format="multipart")
    assert contract(response.json()) == {"created": 1, "updated": 0, "unchanged": 0, "errors": []}


def test_ndjson_body_imports_and_reimport_is_unchanged(cast: dict[str, Any], api_as: Any) -> None:
    client = api_as(cast["users"]["ml_engineer"])
    response = client.post(URL, BODY, content_type="application/x-ndjson")
    assert response.status_code == 200, response.content
    assert contract(response.json()) == SUMMARY
    again = client.post(URL, BODY, content_type="application/x-ndjson")
    assert contract(again.json()) == {"created": 0, "updated": 0, "unchanged": 2,
                            "errors": [{"line": 3, "error": "text: required"}]}
    assert items(cast["project"]) == {"a": ("hello there", {}), "b": ("WIN cash now", {"n": 1})}


def test_gzipped_ndjson_body(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL, gzip.compress(BODY), content_type="application/x-ndjson")
    assert contract(response.json()) == SUMMARY


def test_atomic_failure_is_400_and_imports_nothing(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL + "?atomic=1", BODY, content_type="application/x-ndjson")
    assert response.status_code == 400
    assert contract(response.json()) == {"detail": "nothing was imported: 1 row(s) are invalid", "code": "invalid_rows",
                               "created": 0, "updated": 0, "unchanged": 0,
                               "errors": [{"line": 3, "error": "text: required"}]}
    assert items(cast["project"]) == {}


def test_atomic_success_is_200(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL + "?atomic=true", BODY[: BODY.rindex(b'{"external_id": "c"')],
                                                   content_type="application/x-ndjson")
    assert response.status_code == 200
    assert contract(response.json()) == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}


def test_gold_flag_stores_expected_answers(cast: dict[str, Any], api_as: Any) -> None:
    body = (json.dumps({"external_id": "g1", "text": "WIN", "label": "spam"}) + "\n"
            + json.dumps({"external_id": "g2", "text": "eggs", "label": "eggs"}) + "\n").encode()
    response = api_as(cast["users"]["policy_lead"]).post(URL + "?gold=1", body, content_type="application/x-ndjson")
    assert contract(response.json()) == {"created": 1, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": "label: unknown label 'eggs' (taxonomy v1 has: ham, spam)"}]}
    assert list(Item.objects.values_list("external_id", "is_gold", "gold_labels")) == [("g1", True, ["spam"])]


@pytest.mark.parametrize(("who", "status"), [("reviewer", 403), ("outsider", 404), ("anonymous", 401)])
@pytest.mark.parametrize("kind", ["multipart", "ndjson"])
def test_denied_callers_change_nothing(cast: dict[str, Any], api_as: Any, who: str, status: int, kind: str) -> None:
    before = (Item.objects.count(), AuditEvent.objects.count())
    client = api_as(cast["users"][who])
    if kind == "multipart":
        response = client.post(URL, upload("items.jsonl", BODY), format="multipart")
    else:
        response = client.post(URL, BODY, content_type="application/x-ndjson")
    assert response.status_code == status
    assert (Item.objects.count(), AuditEvent.objects.count()) == before


def test_unknown_project_is_404(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post("/api/projects/nope/items/import", BODY,
                                                   content_type="application/x-ndjson")
    assert response.status_code == 404


def test_upload_over_the_size_cap_is_413_and_changes_nothing(cast: dict[str, Any], api_as: Any,
                                                            settings: Any) -> None:
    settings.SIFT_MAX_UPLOAD_BYTES = 50
    client = api_as(cast["users"]["admin"])
    for response in (client.post(URL, BODY, content_type="application/x-ndjson"),
                     client.post(URL, upload("items.jsonl", BODY), format="multipart")):
        assert response.status_code == 413
        assert response.json() == {"detail": "the upload is larger than the limit of 50 bytes", "code": "too_large"}
    assert (Item.objects.count(), AuditEvent.objects.filter(action="items.import").count()) == (0, 0)


def test_missing_file_is_400(cast: dict[str, Any], api_as: Any) -> None:
    client = api_as(cast["users"]["admin"])
    for response in (client.post(URL, {"other": "x"}, format="multipart"),
                     client.post(URL, b"", content_type="application/x-ndjson")):
        assert response.status_code == 400
        assert response.json() == {"detail": "file: required (a multipart 'file' field, or an application/x-ndjson "
                                             "body)", "code": "invalid", "field": "file"}


def test_bad_flag_is_400(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL + "?atomic=maybe", BODY, content_type="application/x-ndjson")
    assert response.status_code == 400
    assert response.json() == {"detail": "atomic: must be 1 or 0 (true or false), got 'maybe'", "code": "invalid",
                               "field": "atomic"}
    assert Item.objects.count() == 0


def test_other_content_types_are_415(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["admin"]).post(URL, BODY, content_type="text/plain")
    assert response.status_code == 415
    assert Item.objects.count() == 0


def test_schema_documents_both_request_bodies_and_the_summary(client: Any) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/projects/{slug}/items/import"]["post"]
    assert sorted(operation["requestBody"]["content"]) == ["application/x-ndjson", "multipart/form-data"]
    assert sorted(p["name"] for p in operation["parameters"]) == ["atomic", "gold", "slug"]
    # The project-wide schema hooks may add shared responses (e.g. 401); ours must all be there.
    assert {"200", "400", "403", "404", "413"} <= set(operation["responses"])
    summary = schema["components"]["schemas"]["ImportSummary"]
    assert sorted(summary["properties"]) == ["created", "errors", "languages", "unchanged", "updated"]
