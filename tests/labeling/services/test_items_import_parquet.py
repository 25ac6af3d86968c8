"""Parquet import (labeling/services/items_parquet.py through items_import): columns, meta forms, per-row errors,
row groups, gzip and unseekable streams, gold, the command and the API."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from labeling.models import Item, Project
from labeling.services.items_import import items_import
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def parquet(table: pa.Table | dict[str, Any], **kwargs: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), out, **kwargs)
    return out.getvalue()


def run(project: Project, data: bytes, filename: str = "items.parquet", **kwargs: Any) -> dict[str, Any]:
    return items_import(actor=None, project=project, source=io.BytesIO(data), filename=filename,
                        **kwargs).as_dict()


def stored(project: Project) -> dict[str, tuple[str, Any]]:
    return {ext: (text, meta) for ext, text, meta in
            Item.objects.filter(project=project).values_list("external_id", "text", "meta")}


class Unseekable:
    """A stream that can only be read, as standard input or a request body."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._inner.read(size)


@pytest.fixture
def project(db: Any) -> Project:
    return ProjectFactory(slug="pq", taxonomy=SMS_TAXONOMY)


def test_struct_meta_imports_and_reimport_is_unchanged(project: Project) -> None:
    data = parquet({"external_id": ["a", "b"], "text": ["hello", "WIN now"],
                    "meta": [{"lang": "en", "n": 1}, {"lang": "fr", "n": None}]})
    assert run(project, data) == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}
    assert stored(project) == {"a": ("hello", {"lang": "en", "n": 1}), "b": ("WIN now", {"lang": "fr", "n": None})}
    assert run(project, data) == {"created": 0, "updated": 0, "unchanged": 2, "errors": []}


def test_json_string_meta_and_per_row_errors(project: Project) -> None:
    data = parquet({"external_id": ["a", "b", "c", None, "e", "f"],
                    "text": ["one", "two", "three", "four", "", None],
                    "meta": ['{"k": [1, 2]}', "{not json", '["a list"]', "{}", None, ""]})
    summary = run(project, data)
    assert summary["created"] == 1
    assert [(e["line"], e["error"].split(" (")[0]) for e in summary["errors"]] == [
        (2, "meta: the string is not valid JSON"),
        (3, "meta: must be a JSON object, not an array"),
        (4, "external_id: required"),
        (5, "text: must not be empty"),
        (6, "text: required"),
    ]
    assert stored(project) == {"a": ("one", {"k": [1, 2]})}


def test_other_columns_become_meta_with_json_forms(project: Project) -> None:
    table = pa.table({
        "external_id": pa.array([1, 2], pa.int64()),
        "text": ["first", "second"],
        "score": [0.5, float("nan")],
        "flag": [True, False],
        "seen": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5), None], pa.timestamp("s")),
        "tags": [["x", "y"], []],
        "__index_level_0__": [10, 11],
    })
    assert run(project, parquet(table))["errors"] == []
    assert stored(project) == {
        "1": ("first", {"score": 0.5, "flag": True, "seen": "2026-01-02T03:04:05", "tags": ["x", "y"]}),
        "2": ("second", {"score": None, "flag": False, "seen": None, "tags": []}),
    }


def test_meta_column_keys_win_over_columns_of_the_same_name(project: Project) -> None:
    data = parquet({"external_id": ["a"], "text": ["t"], "source": ["column"],
                    "meta": ['{"source": "meta", "x": 1}']})
    run(project, data)
    assert stored(project) == {"a": ("t", {"source": "meta", "x": 1})}


def test_many_row_groups_all_import_in_order(project: Project) -> None:
    n = 5_003
    data = parquet({"external_id": [f"id{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)]},
                   row_group_size=1_000)
    assert pq.ParquetFile(io.BytesIO(data)).num_row_groups == 6
    assert run(project, data) == {"created": n, "updated": 0, "unchanged": 0, "errors": []}
    bad = parquet({"external_id": [f"id{i}" for i in range(n)],
                   "text": [None if i == 4_321 else f"text {i}" for i in range(n)]}, row_group_size=1_000)
    assert run(project, bad) == {"created": 0, "updated": 0, "unchanged": n - 1,
                                 "errors": [{"line": 4_322, "error": "text: required"}]}


def test_missing_column_and_not_parquet_are_reported_once(project: Project) -> None:
    summary = run(project, parquet({"external_id": ["a"], "body": ["x"]}))
    assert summary["created"] == 0
    assert [e["line"] for e in summary["errors"]] == [1]
    assert summary["errors"][0]["error"].startswith("the Parquet file must have the columns external_id and text, "
                                                    "each once (missing: text; found: external_id, body)")
    garbage = run(project, b"PAR1 this is not really parquet")
    assert [e["line"] for e in garbage["errors"]] == [1]
    assert garbage["errors"][0]["error"].startswith("not a readable Parquet file")
    assert Item.objects.count() == 0


def test_format_is_sniffed_and_gzip_and_unseekable_streams_are_spooled(project: Project) -> None:
    data = parquet({"external_id": ["a", "b"], "text": ["one", "two"]})
    assert run(project, data, filename="upload")["created"] == 2
    assert items_import(actor=None, project=project, source=Unseekable(data), filename="").as_dict()["unchanged"] == 2
    zipped = gzip.compress(parquet({"external_id": ["a", "c"], "text": ["one!", "three"]}))
    assert items_import(actor=None, project=project, source=Unseekable(zipped),
                        filename="items.parquet.gz").as_dict() == {"created": 1, "updated": 1, "unchanged": 0,
                                                                    "errors": []}
    assert stored(project) == {"a": ("one!", {}), "b": ("two", {}), "c": ("three", {})}


def test_corrupt_row_group_keeps_the_rows_before_it(project: Project) -> None:
    n = 4_000
    texts = [f"text number {i} " + "z" * (i % 97) for i in range(n)]
    data = bytearray(parquet({"external_id": [f"r{i}" for i in range(n)], "text": texts},
                             row_group_size=2_000, compression="zstd"))
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    second = meta.row_group(1).column(1)
    start = second.data_page_offset + 40
    data[start:start + 64] = b"\xff" * 64
    summary = run(project, bytes(data))
    assert summary["created"] == 2_000
    assert [e["line"] for e in summary["errors"]] == [2_001]
    assert summary["errors"][0]["error"].startswith("the Parquet data is corrupt")


def test_gold_labels_as_key_or_list(project: Project) -> None:
    data = parquet({"external_id": ["g1", "g2", "g3"], "text": ["a", "b", "c"],
                    "label": [["spam"], ["ham"], ["nope"]]})
    summary = run(project, data, gold=True)
    assert (summary["created"], [e["line"] for e in summary["errors"]]) == (2, [3])
    assert dict(Item.objects.filter(project=project).values_list("external_id", "gold_labels")) == {
        "g1": ["spam"], "g2": ["ham"]}
    plain = parquet({"external_id": ["g4"], "text": ["d"], "label": ["spam"]})
    assert run(project, plain, gold=True)["created"] == 1
    assert Item.objects.get(external_id="g4").gold_labels == ["spam"]


def test_import_items_command_reads_parquet(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "batch.parquet"
    path.write_bytes(parquet({"external_id": ["a"], "text": ["from the command line"], "channel": ["sms"]}))
    out = io.StringIO()
    call_command("import_items", "--project", "pq", str(path), stdout=out)
    assert json.loads(out.getvalue()) == {"created": 1, "updated": 0, "unchanged": 0, "errors": [],
                                          "languages": {"counts": {"en": 1}, "undetermined": 0,
                                                        "recommended_embedder": None}}
    assert stored(project) == {"a": ("from the command line", {"channel": "sms"})}


def test_api_multipart_parquet_upload(cast: dict[str, Any], api_as: Any) -> None:
    data = parquet({"external_id": ["p1", "p2"], "text": ["one", None], "meta": [{"k": 1}, {"k": 2}]})
    response = api_as(cast["users"]["ml_engineer"]).post(
        "/api/projects/sms/items/import", {"file": SimpleUploadedFile("batch.parquet", data)}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 1, "updated": 0, "unchanged": 0,
                               "errors": [{"line": 2, "error": "text: required"}],
                               "languages": {"counts": {"en": 1}, "undetermined": 0, "recommended_embedder": None}}
    assert stored(cast["project"]) == {"p1": ("one", {"k": 1})}


def test_float_meta_keeps_json_rules_while_float_free_meta_takes_the_fast_path(project: Project,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson writes inf/nan as null where json refuses them: the fast path only where no float can be in meta."""
    from labeling.services.items_import import parse

    seen: list[bool] = []
    original = parse._Validator.meta

    def spy(self: Any, value: Any, *, finite: bool = False) -> Any:
        seen.append(finite)
        return original(self, value, finite=finite)

    monkeypatch.setattr(parse._Validator, "meta", spy)
    run(project, parquet({"external_id": ["a"], "text": ["t"], "meta": [{"n": 1, "s": "x"}], "c": ["y"]}))
    run(project, parquet({"external_id": ["b", "c"], "text": ["t", "u"], "score": [1.5, float("inf")]}))
    run(project, parquet({"external_id": ["d"], "text": ["t"], "meta": ['{"x": NaN}']}))
    assert seen == [True, False, False, False]
    assert stored(project)["a"] == ("t", {"n": 1, "s": "x", "c": "y"})
    assert Item.objects.filter(external_id__in=["c", "d"]).count() == 0  # inf and NaN: refused per row
