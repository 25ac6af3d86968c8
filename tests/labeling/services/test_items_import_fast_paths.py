"""The importer's fast paths decide exactly as the slow ones did.

* orjson reads the lines (and writes meta) where it gives the same result as json; anything it
  refuses or might read inexactly (an integer beyond 64 bits becomes a float in orjson) goes to json.
  The corpus below is parsed both ways and must give the same rows and the same errors.
* The stored-rows lookup on PostgreSQL probes the unique index per external id even while the
  statistics still describe a new project as nearly empty (the plain ``= ANY`` query then scanned the
  whole project for every chunk, and an import grew quadratic).
"""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labeling.models import Item, Project
from labeling.services.items_import import items_import
from labeling.services.items_import import parse as importer
from labeling.services.items_import import store as import_store
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory

BIG = 123456789012345678901234567890  # beyond 64 bits: orjson would read it as 1.2345678901234568e+29

CORPUS: list[bytes] = [
    b'\xef\xbb\xbf{"external_id": "bom", "text": "first line with a BOM"}',
    b'{"external_id": "plain", "text": "hello", "meta": {"a": 1, "b": [1.5, "x", null, true]}}',
    b'\xef\xbb\xbf{"external_id": "bom-later", "text": "a BOM after line 1 is an error"}',
    b'{"external_id": "crlf", "text": "windows"}\r',
    b"",
    b"   \t",
    b'{"external_id": "big-meta", "text": "t", "meta": {"n": ' + str(BIG).encode() + b"}}",
    b'{"external_id": "big-nested", "text": "t", "meta": {"x": [[{"n": -' + str(BIG).encode() + b"}]]}}",
    b'{"external_id": ' + str(BIG).encode() + b', "text": "numeric id beyond 64 bits"}',
    b'{"external_id": 12345678901234567, "text": "numeric id within 64 bits"}',
    b'{"external_id": "edge-neg", "text": "t", "meta": {"n": -9223372036854775809}}',
    b'{"external_id": "edge-u64", "text": "t", "meta": {"n": 18446744073709551615}}',
    b'{"external_id": "float-big", "text": "t", "meta": {"f": 1e300, "g": 9.3e18}}',
    b'{"external_id": "inf", "text": "t", "meta": {"f": 1e400}}',
    b'{"external_id": "nan", "text": "t", "meta": {"f": NaN}}',
    b'{"external_id": "lone", "text": "t", "meta": {"s": "\\ud800"}}',
    b'{"external_id": "lone-text", "text": "a\\udc00b"}',
    b'{"external_id": "pair", "text": "emoji \\ud83d\\ude00"}',
    b'{"external_id": "nul-meta", "text": "t", "meta": {"s": "a\\u0000b"}}',
    b'{"external_id": "nul-text", "text": "a\\u0000b"}',
    b'{"external_id": "dup", "text": "first", "text": "last wins"}',
    b'{"external_id": "deep", "text": "t", "meta": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}",
    b'{"external_id": "deeper", "text": "t", "meta": ' + b"[" * 1100 + b"]" * 1100 + b"}",
    b'{"external_id": "ctrl", "text": "a\tb"}',
    b'{"external_id": "bad-utf8", "text": "caf\xe9"}',
    b'{"external_id": "trailing", "text": "t"} x',
    b'{"external_id": "comma", "text": "t",}',
    b'["not", "an", "object"]',
    b'"a string"',
    b"42",
    b'{"text": "no id"}',
    b'{"external_id": "", "text": "empty id"}',
    b'{"external_id": true, "text": "bool id"}',
    b'{"external_id": "no-text"}',
    b'{"external_id": "meta-list", "text": "t", "meta": [1, 2]}',
    '{"external_id": "unicode", "text": "naïve café ☕", "meta": {"ké": "☕"}}'.encode(),
    b'{"external_id": "escapes", "text": "tab\\there\\nnewline \\\\ back", "meta": {"q": "\\"quoted\\""}}',
]


def _parse(data: bytes, *, gold: bool = False) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    summary = importer.ImportSummary()
    validator = importer._Validator(gold=gold, taxonomy=None, max_text_chars=settings.SIFT_MAX_TEXT_CHARS)
    rows = [
        # meta_json's spacing differs between the two writers; what it encodes must not.
        (r.line, r.external_id, r.text, r.meta, json.loads(r.meta_json), r.content_hash, r.gold_labels)
        for r in importer._rows(io.BytesIO(data), filename="x.jsonl", file_format=None, validator=validator,
                                summary=summary)
    ]
    return rows, summary.as_dict()["errors"]


def test_orjson_and_json_give_the_same_rows_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"\n".join(CORPUS) + b"\n"
    fast_rows, fast_errors = _parse(data)
    # The slow paths alone: json reads every line and writes every meta (orjson's writer refusing).
    monkeypatch.setattr(importer, "_orjson_object", lambda raw: importer._SLOW)

    def refuse(value: Any) -> bytes:
        raise TypeError("orjson disabled for this comparison")
    monkeypatch.setattr(orjson, "dumps", refuse)
    slow_rows, slow_errors = _parse(data)

    assert fast_rows == slow_rows
    assert fast_errors == slow_errors
    # And the corpus does exercise both outcomes, with the exact values json gives.
    by_id = {row[1]: row for row in fast_rows}
    assert by_id["big-meta"][3] == {"n": BIG} and type(by_id["big-meta"][3]["n"]) is int
    assert by_id["big-nested"][3] == {"x": [[{"n": -BIG}]]}
    assert str(BIG) in by_id and "12345678901234567" in by_id
    assert by_id["edge-neg"][3] == {"n": -9223372036854775809}
    assert by_id["dup"][2] == "last wins"
    assert by_id["unicode"][3] == {"ké": "☕"}
    assert list(by_id) == ["bom", "plain", "crlf", "big-meta", "big-nested", str(BIG), "12345678901234567",
                           "edge-neg", "edge-u64", "float-big", "pair", "dup", "unicode", "escapes"]
    assert fast_errors == [
        {"line": 3, "error": "invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) (column 1)"},
        {"line": 14, "error": "meta: contains a number out of JSON's range"},
        {"line": 15, "error": "invalid JSON: NaN is not valid JSON"},
        {"line": 16, "error": "meta: contains an unpaired surrogate (\\ud800)"},
        {"line": 17, "error": "text: contains an unpaired surrogate (\\udc00)"},
        {"line": 19, "error": "meta: contains a NUL character"},
        {"line": 20, "error": "text: contains a NUL character"},
        # 300 levels parse, and are refused by the nesting cap (labeling/models/items.py, issue 16).
        {"line": 22, "error": "meta: nested more than 32 levels deep (lists and objects inside each other); "
                              "flatten it"},
        {"line": 23, "error": "invalid JSON: nested too deeply"},
        {"line": 24, "error": "invalid JSON: Invalid control character at (column 35)"},
        {"line": 25, "error": "not valid UTF-8: byte 0xe9 at byte 41 of the line"},
        {"line": 26, "error": "invalid JSON: Extra data (column 42)"},
        {"line": 27, "error": "invalid JSON: Expecting property name enclosed in double quotes (column 38)"},
        {"line": 28, "error": "expected a JSON object, got an array"},
        {"line": 29, "error": "expected a JSON object, got a string"},
        {"line": 30, "error": "expected a JSON object, got a number"},
        {"line": 31, "error": "external_id: required"},
        {"line": 32, "error": "external_id: required"},
        {"line": 33, "error": "external_id: must be a string or a number, not a boolean"},
        {"line": 34, "error": "text: required"},
        {"line": 35, "error": "meta: must be a JSON object, not an array"},
    ]


def test_the_fast_reader_only_hands_json_what_it_cannot_read_exactly() -> None:
    assert importer._orjson_object(b'{"external_id": "a", "meta": {"n": 9223372036854775807}}') != importer._SLOW
    assert importer._orjson_object(b'{"external_id": "a", "meta": {"n": 18446744073709551616}}') is importer._SLOW
    assert importer._orjson_object(b'{"external_id": 1e19, "text": "t"}') is importer._SLOW
    assert importer._orjson_object(b'{"external_id": "a", "text": "t"}') == {"external_id": "a", "text": "t"}
    assert importer._orjson_object(b"not json") is importer._SLOW


def test_csv_meta_goes_through_the_fast_writer_and_round_trips(db: Any) -> None:
    project = ProjectFactory(slug="fast-csv", taxonomy=SMS_TAXONOMY)
    data = "external_id,text,lang,note\nc1,hello,en,\"naïve, ☕\"\nc2,bye,fr,\n".encode()
    summary = items_import(actor=None, project=project, source=io.BytesIO(data), filename="x.csv")
    assert summary.as_dict() == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}
    assert dict(Item.objects.filter(project=project).values_list("external_id", "meta")) == {
        "c1": {"lang": "en", "note": "naïve, ☕"}, "c2": {"lang": "fr", "note": ""}}
    again = items_import(actor=None, project=project, source=io.BytesIO(data), filename="x.csv")
    assert again.as_dict() == {"created": 0, "updated": 0, "unchanged": 2, "errors": []}


def test_meta_with_integers_beyond_64_bits_is_stored_exactly_and_reimports_unchanged(db: Any) -> None:
    project = ProjectFactory(slug="fast-big", taxonomy=SMS_TAXONOMY)
    line = b'{"external_id": "b1", "text": "t", "meta": {"n": ' + str(BIG).encode() + b"}}\n"
    first = items_import(actor=None, project=project, source=io.BytesIO(line), filename="x.jsonl")
    assert first.as_dict() == {"created": 1, "updated": 0, "unchanged": 0, "errors": []}
    assert Item.objects.get(project=project, external_id="b1").meta == {"n": BIG}
    # The stored jsonb is read back through the same exactness check, so equal values compare equal.
    again = items_import(actor=None, project=project, source=io.BytesIO(line), filename="x.jsonl")
    assert again.as_dict() == {"created": 0, "updated": 0, "unchanged": 1, "errors": []}
    changed = line.replace(str(BIG).encode(), str(BIG + 1).encode())
    third = items_import(actor=None, project=project, source=io.BytesIO(changed), filename="x.jsonl")
    assert third.as_dict() == {"created": 0, "updated": 1, "unchanged": 0, "errors": []}
    assert Item.objects.get(project=project, external_id="b1").meta["n"] == BIG + 1


@pytest.mark.usefixtures("postgres_only")
def test_stored_rows_lookup_probes_the_unique_index_while_statistics_are_stale(db: Any) -> None:
    project: Project = ProjectFactory(slug="fast-plan", taxonomy=SMS_TAXONOMY)
    rows = "".join(json.dumps({"external_id": f"p{n}", "text": f"text {n}"}) + "\n" for n in range(3_000))
    assert items_import(actor=None, project=project, source=io.BytesIO(rows.encode()),
                        filename="x.jsonl").created == 3_000
    # No ANALYZE since: the planner still believes this project holds (next to) nothing.
    with CaptureQueriesContext(connection) as captured:
        state = import_store._stored(project, [f"p{n}" for n in range(0, 3_000, 3)] + ["absent"])
    assert len(state) == 1_000 and state["p3"].pk is not None and "absent" not in state
    (query,) = [q["sql"] for q in captured.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {query}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
    assert "Index Scan using unique_item_external_id" in plan, plan
    assert "Bitmap" not in plan and "Seq Scan" not in plan, plan
