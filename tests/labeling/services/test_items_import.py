"""labeling.services.items_import: formats, per-line errors, idempotency, gold, atomicity, streaming."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from labeling.models import AuditEvent, Item, Project
from labeling.services.items_import import COPY_COLUMNS, item_content_hash, items_import
from labeling.services.items_import import parse as import_parse
from labeling.services.items_import import store as import_store
from tests.conftest import SHARED_DATA, SMS_TAXONOMY, using_postgres
from tests.factories import ProjectFactory

DATA = SHARED_DATA


def run(project: Project, data: bytes | str, filename: str = "items.jsonl", **kwargs: Any) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    return items_import(actor=None, project=project, source=io.BytesIO(raw), filename=filename, **kwargs).as_dict()


def jsonl(*rows: Any) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def stored(project: Project) -> dict[str, tuple[str, Any]]:
    return {ext: (text, meta) for ext, text, meta in
            Item.objects.filter(project=project).values_list("external_id", "text", "meta")}


@pytest.fixture
def project(db: Any) -> Project:
    return ProjectFactory(slug="imp", taxonomy=SMS_TAXONOMY, overlap=2)


# --- The public data sets --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rows"), [
    ("sms_spam.jsonl.gz", 4_862), ("spamassassin.jsonl.gz", 6_046), ("bbc_news.jsonl.gz", 2_225),
])
def test_every_shared_data_file_imports_and_reimports_unchanged(project: Project, name: str, rows: int) -> None:
    path = DATA / name
    with path.open("rb") as handle:
        first = items_import(actor=None, project=project, source=handle, filename=name).as_dict()
    assert first == {"created": rows, "updated": 0, "unchanged": 0, "errors": []}
    assert Item.objects.filter(project=project).count() == rows
    with path.open("rb") as handle:
        again = items_import(actor=None, project=project, source=handle, filename=name).as_dict()
    assert again == {"created": 0, "updated": 0, "unchanged": rows, "errors": []}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        first_row = json.loads(next(lines))
    item = Item.objects.get(project=project, external_id=first_row["external_id"])
    assert (item.text, item.meta, item.content_hash) == (
        first_row["text"], first_row.get("meta", {}), hashlib.sha256(first_row["text"].encode()).hexdigest())
    assert (item.is_gold, item.gold_labels, item.n_required, item.n_done) == (False, None, 2, 0)


# --- A corrupted JSON Lines file ---------------------------------------------------------------

CORRUPT_JSONL = b"".join([
    b'{"external_id": "a", "text": "first valid"}\n',                      # 1
    b'{"external_id": "b", "text": "unterminated\n',                       # 2
    b'{"text": "no id"}\n',                                                 # 3
    b'{"external_id": "c"}\n',                                              # 4
    b'{"external_id": "d", "text": "   "}\n',                               # 5
    b'["not", "an", "object"]\n',                                           # 6
    json.dumps({"external_id": "big", "text": "x" * 10_000_000}).encode() + b"\n",  # 7: 10 MB
    b'{"external_id": "latin1", "text": "caf\xe9"}\n',                      # 8
    b'{"external_id": "e", "text": "second valid", "meta": {"k": 1}}\n',    # 9
    b"\n",                                                                  # 10: blank, skipped
    b'{"external_id": "f", "text": "x", "meta": [1]}\n',                    # 11
    b'{"external_id": true, "text": "x"}\n',                                # 12
    b'{"external_id": 42, "text": "numeric id"}\n',                         # 13
    b'{"external_id": "nan", "text": "x", "meta": {"v": NaN}}\n',           # 14
    b'{"external_id": "nul", "text": "a\\u0000b"}\n',                       # 15
    json.dumps({"external_id": "x" * 256, "text": "long id"}).encode() + b"\n",  # 16
    b'"just a string"\n',                                                   # 17
    b'{"external_id": "sur", "text": "\\ud800"}\n',                         # 18
    b'{"external_id": "inf", "text": "x", "meta": {"v": 1e400}}\n',         # 19
    b'{"external_id": 1e400, "text": "x"}\n',                               # 20
    b'{"external_id": "g", "text": "last valid, no newline"}',              # 21
])
CORRUPT_JSONL_ERRORS = [
    {"line": 2, "error": "invalid JSON: Unterminated string starting at (column 30)"},
    {"line": 3, "error": "external_id: required"},
    {"line": 4, "error": "text: required"},
    {"line": 5, "error": "text: must not be empty"},
    {"line": 6, "error": "expected a JSON object, got an array"},
    {"line": 7, "error": "text: 10,000,000 characters; the limit is 1,000,000"},
    {"line": 8, "error": "not valid UTF-8: byte 0xe9 at byte 39 of the line"},
    {"line": 11, "error": "meta: must be a JSON object, not an array"},
    {"line": 12, "error": "external_id: must be a string or a number, not a boolean"},
    {"line": 14, "error": "invalid JSON: NaN is not valid JSON"},
    {"line": 15, "error": "text: contains a NUL character"},
    {"line": 16, "error": "external_id: 256 characters; the limit is 255"},
    {"line": 17, "error": "expected a JSON object, got a string"},
    {"line": 18, "error": "text: contains an unpaired surrogate (\\ud800)"},
    {"line": 19, "error": "meta: contains a number out of JSON's range"},
    {"line": 20, "error": "external_id: a number out of JSON's range"},
]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_corrupt_jsonl_reports_each_bad_line_and_imports_every_valid_row(project: Project, compress: bool) -> None:
    data = gzip.compress(CORRUPT_JSONL) if compress else CORRUPT_JSONL
    summary = run(project, data, filename="items.jsonl.gz" if compress else "items.jsonl")
    assert summary == {"created": 4, "updated": 0, "unchanged": 0, "errors": CORRUPT_JSONL_ERRORS}
    assert stored(project) == {"a": ("first valid", {}), "e": ("second valid", {"k": 1}),
                               "42": ("numeric id", {}), "g": ("last valid, no newline", {})}
    item = Item.objects.get(project=project, external_id="a")
    assert item.content_hash == hashlib.sha256(b"first valid").hexdigest()
    assert (item.n_required, item.is_gold, item.gold_labels) == (2, False, None)


def test_gzip_is_detected_by_magic_bytes_not_by_name(project: Project) -> None:
    data = gzip.compress(jsonl({"external_id": "a", "text": "zipped"}).encode())
    assert run(project, data, filename="items.jsonl") == {"created": 1, "updated": 0, "unchanged": 0, "errors": []}


def test_format_is_sniffed_when_the_name_says_nothing(project: Project) -> None:
    assert run(project, jsonl({"external_id": "j", "text": "json"}), filename="") == {
        "created": 1, "updated": 0, "unchanged": 0, "errors": []}
    assert run(project, "external_id,text\nc,csv\n", filename="upload.bin") == {
        "created": 1, "updated": 0, "unchanged": 0, "errors": []}
    assert stored(project) == {"j": ("json", {}), "c": ("csv", {})}


def test_empty_file_imports_nothing_without_errors(project: Project) -> None:
    assert run(project, b"") == {"created": 0, "updated": 0, "unchanged": 0, "errors": []}
    assert run(project, gzip.compress(b""), filename="x.jsonl.gz") == {
        "created": 0, "updated": 0, "unchanged": 0, "errors": []}


# --- Gzip problems -----------------------------------------------------------------------------


def _many_lines(n: int) -> bytes:
    return jsonl(*({"external_id": f"r{i}", "text": f"row {i} " + "lorem ipsum " * (i % 7)} for i in range(n))).encode()


def test_truncated_gzip_keeps_the_rows_before_the_cut_and_names_the_line(project: Project) -> None:
    plain = _many_lines(3_000)
    compressed = gzip.compress(plain)
    cut = compressed[: len(compressed) // 2]
    # What a streaming reader can recover: every complete line decompressible from the cut stream.
    recovered = zlib.decompressobj(wbits=31).decompress(cut)
    complete = recovered.count(b"\n")
    assert 0 < complete < 3_000
    summary = run(project, cut, filename="items.jsonl.gz")
    assert summary == {"created": complete, "updated": 0, "unchanged": 0, "errors": [{
        "line": complete + 1,
        "error": "the gzip data is truncated or corrupt (Compressed file ended before the end-of-stream marker was "
                 f"reached): line {complete + 1:,} and everything after it were not read",
    }]}
    assert Item.objects.filter(project=project).count() == complete


def test_truncated_gzip_with_atomic_imports_nothing(project: Project) -> None:
    compressed = gzip.compress(_many_lines(3_000))
    summary = run(project, compressed[: len(compressed) // 2], filename="items.jsonl.gz", atomic=True)
    assert (summary["created"], summary["updated"], summary["unchanged"], len(summary["errors"])) == (0, 0, 0, 1)
    assert Item.objects.filter(project=project).count() == 0


def test_gzip_with_a_bad_checksum_is_reported_after_the_last_line(project: Project) -> None:
    compressed = bytearray(gzip.compress(_many_lines(10)))
    compressed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    summary = run(project, bytes(compressed), filename="items.jsonl.gz")
    assert summary == {"created": 10, "updated": 0, "unchanged": 0, "errors": [{
        "line": 11, "error": "the gzip data is truncated or corrupt (CRC check failed 0x{:x} != 0x{:x}): line 11 "
                             "and everything after it were not read".format(
                                 int.from_bytes(bytes(compressed[-8:-4]), "little"),
                                 zlib.crc32(_many_lines(10))),
    }]}


def test_decompressed_size_is_capped(project: Project, settings: Any) -> None:
    settings.SIFT_MAX_DECOMPRESSED_BYTES = 1_000
    summary = run(project, gzip.compress(_many_lines(100)), filename="items.jsonl.gz")
    assert summary == {"created": 0, "updated": 0, "unchanged": 0, "errors": [{
        "line": 1, "error": "the decompressed data is larger than the limit of 1,000 bytes: line 1 and everything "
                            "after it were not read",
    }]}


def test_not_gzip_after_the_magic_bytes_is_reported(project: Project) -> None:
    summary = run(project, b"\x1f\x8bnot really gzip at all", filename="items.jsonl.gz")
    assert summary["created"] == 0
    assert [e["line"] for e in summary["errors"]] == [1]
    assert summary["errors"][0]["error"].startswith("the gzip data is truncated or corrupt (")


# --- Long lines ------------------------------------------------------------------------------


def test_lines_over_the_byte_cap_are_skipped_while_streaming(project: Project, settings: Any) -> None:
    settings.SIFT_MAX_TEXT_CHARS = 1_000  # the line cap is then max(16 x 1,000, 1 MiB) = 1 MiB
    huge = json.dumps({"external_id": "huge", "text": "y" * 2_000_000})
    data = jsonl({"external_id": "a", "text": "ok"}, huge, {"external_id": "b", "text": "z" * 5_000},
                 {"external_id": "c", "text": "ok too"}) + huge  # the last, overlong line has no newline
    summary = run(project, data)
    assert summary == {"created": 2, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": "line is longer than 1,048,576 bytes (texts are limited to 1,000 characters)"},
        {"line": 3, "error": "text: 5,000 characters; the limit is 1,000"},
        {"line": 5, "error": "line is longer than 1,048,576 bytes (texts are limited to 1,000 characters)"},
    ]}
    assert sorted(stored(project)) == ["a", "c"]


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"\n")),
       pieces=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
       cap=st.integers(min_value=1, max_value=30))
def test_line_reader_matches_split_whatever_the_read_sizes(data: bytes, pieces: list[int], cap: int) -> None:
    stream = io.BytesIO(data)
    sizes = iter(pieces * (len(data) + 1))

    def read(size: int) -> bytes:  # returns arbitrary short pieces, as a socket or gzip may
        return stream.read(next(sizes))

    reader = import_parse._LineReader(read, gzipped=False, max_line_bytes=cap, max_decompressed_bytes=10**9)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    expected = [(n, line if len(line) <= cap else None) for n, line in enumerate(lines, start=1)]
    assert list(reader) == expected
    assert reader.problem is None


# --- CSV -------------------------------------------------------------------------------------

CORRUPT_CSV = b"".join([
    b"\xef\xbb\xbfexternal_id,text,source,label\r\n",  # 1: BOM, CRLF
    b"a,plain,web,spam\r\n",                          # 2
    b'b,"multi\r\nline text",app,ham\r\n',            # 3-4: one record over two lines
    b"c,too few\r\n",                                 # 5
    b"d,too,many,fields,here\r\n",                    # 6
    b",no id,web,\r\n",                               # 7
    b"e,,web,\r\n",                                   # 8
    b"f,caf\xe9,web,\r\n",                            # 9
    b"\r\n",                                          # 10: blank
    b'g,"bad "quote",web,\r\n',                       # 11
    b'h,"last, with comma",web,',                     # 12: no final newline
])
CORRUPT_CSV_ERRORS = [
    {"line": 5, "error": "has 2 fields; the header has 4 (external_id, text, source, label)"},
    {"line": 6, "error": "has 5 fields; the header has 4 (external_id, text, source, label)"},
    {"line": 7, "error": "external_id: required"},
    {"line": 8, "error": "text: must not be empty"},
    {"line": 9, "error": "not valid UTF-8: byte 0xe9 in this record"},
    {"line": 11, "error": "invalid CSV: ',' expected after '\"'"},
]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_corrupt_csv_reports_each_bad_record_and_imports_every_valid_one(project: Project, compress: bool) -> None:
    data = gzip.compress(CORRUPT_CSV) if compress else CORRUPT_CSV
    summary = run(project, data, filename="items.csv.gz" if compress else "items.csv")
    assert summary == {"created": 3, "updated": 0, "unchanged": 0, "errors": CORRUPT_CSV_ERRORS}
    # The other columns become meta; the label column is ignored outside a gold import.
    assert stored(project) == {"a": ("plain", {"source": "web"}), "b": ("multi\r\nline text", {"source": "app"}),
                               "h": ("last, with comma", {"source": "web"})}
    assert set(Item.objects.filter(project=project).values_list("is_gold", "gold_labels")) == {(False, None)}


def test_csv_header_without_the_required_columns_reads_nothing(project: Project) -> None:
    summary = run(project, "external_id,body\n1,x\n", filename="items.csv")
    assert summary == {"created": 0, "updated": 0, "unchanged": 0, "errors": [{
        "line": 1, "error": "the CSV header must name the columns external_id and text, each once (missing: text; "
                            "found: external_id, body); nothing was read"}]}


def test_csv_duplicate_header_column_reads_nothing(project: Project) -> None:
    summary = run(project, "external_id,text,text\n1,x,y\n", filename="items.csv")
    assert summary["errors"] == [{"line": 1, "error": "the CSV header must name the columns external_id and text, "
                                                      "each once (duplicate column text; found: external_id, text, "
                                                      "text); nothing was read"}]
    assert Item.objects.filter(project=project).count() == 0


def test_csv_unclosed_quote_is_reported_at_its_record(project: Project) -> None:
    summary = run(project, 'external_id,text\na,ok\nb,"unclosed\nc,never seen\n', filename="items.csv")
    assert summary == {"created": 1, "updated": 0, "unchanged": 0,
                       "errors": [{"line": 3, "error": "invalid CSV: unexpected end of data"}]}


def test_csv_gold_labels_accept_separators_and_json_lists(project: Project) -> None:
    multi = ProjectFactory(slug="multi", taxonomy={"name": "m", "multi_label": True, "labels": [
        {"key": "a"}, {"key": "b"}, {"key": "c"}]})
    data = 'external_id,text,label\n1,one,b|a\n2,two,"[""c""]"\n3,three,"a, c"\n4,four,\n'
    summary = run(multi, data, filename="gold.csv", gold=True)
    assert summary == {"created": 3, "updated": 0, "unchanged": 0, "errors": [
        {"line": 5, "error": "label: a gold row needs the expected answer (a label key or a list of keys)"}]}
    assert dict(Item.objects.filter(project=multi).values_list("external_id", "gold_labels")) == {
        "1": ["a", "b"], "2": ["c"], "3": ["a", "c"]}


# --- Idempotency -----------------------------------------------------------------------------


def test_reimport_is_unchanged_and_changes_are_updates_with_a_new_hash(project: Project) -> None:
    rows = [{"external_id": "a", "text": "alpha"}, {"external_id": "b", "text": "beta", "meta": {"x": 1}},
            {"external_id": "c", "text": "gamma"}]
    assert run(project, jsonl(*rows)) == {"created": 3, "updated": 0, "unchanged": 0, "errors": []}
    before = {item.external_id: item for item in Item.objects.filter(project=project)}
    assert run(project, jsonl(*rows)) == {"created": 0, "updated": 0, "unchanged": 3, "errors": []}

    Project.objects.filter(pk=project.pk).update(overlap=3)
    project.refresh_from_db()
    changed = [{"external_id": "a", "text": "alpha, edited"}, {"external_id": "b", "text": "beta", "meta": {"x": 2}},
               {"external_id": "c", "text": "gamma"}, {"external_id": "d", "text": "delta"}]
    assert run(project, jsonl(*changed)) == {"created": 1, "updated": 2, "unchanged": 1, "errors": []}
    after = {item.external_id: item for item in Item.objects.filter(project=project)}
    assert after["a"].pk == before["a"].pk
    assert after["a"].text == "alpha, edited"
    assert after["a"].content_hash == hashlib.sha256(b"alpha, edited").hexdigest() != before["a"].content_hash
    assert after["b"].meta == {"x": 2}
    assert after["b"].content_hash == before["b"].content_hash
    assert after["a"].updated_at > before["a"].updated_at
    assert after["c"].updated_at == before["c"].updated_at
    # New items take the project's overlap at import time; existing ones keep theirs.
    assert {ext: item.n_required for ext, item in after.items()} == {"a": 2, "b": 2, "c": 2, "d": 3}


def test_meta_key_order_does_not_count_as_a_change(project: Project) -> None:
    run(project, jsonl({"external_id": "a", "text": "t", "meta": {"x": 1, "y": [1, 2]}}))
    assert run(project, jsonl({"external_id": "a", "text": "t", "meta": {"y": [1, 2], "x": 1}})) == {
        "created": 0, "updated": 0, "unchanged": 1, "errors": []}


def test_annotated_item_keeps_its_text_but_meta_may_change(project: Project) -> None:
    run(project, jsonl({"external_id": "a", "text": "labelled"}, {"external_id": "b", "text": "open"}))
    Item.objects.filter(project=project, external_id="a").update(n_done=1)
    summary = run(project, jsonl({"external_id": "a", "text": "rewritten"}, {"external_id": "b", "text": "reopen"},
                                 {"external_id": "a", "text": "labelled", "meta": {"note": "ok"}}))
    assert summary == {"created": 0, "updated": 2, "unchanged": 0, "errors": [{
        "line": 1, "error": "external_id 'a' already has 1 annotation(s); its text cannot change (import the new "
                            "text under a new external_id)"}]}
    assert stored(project) == {"a": ("labelled", {"note": "ok"}), "b": ("reopen", {})}


@pytest.mark.parametrize("chunk_rows", [2_000, 1], ids=["one-chunk", "chunk-per-row"])
def test_duplicate_external_ids_apply_in_order_last_wins(project: Project, chunk_rows: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_store, "CHUNK_ROWS", chunk_rows)
    data = jsonl({"external_id": "a", "text": "one"}, {"external_id": "a", "text": "two"},
                 {"external_id": "a", "text": "two"}, {"external_id": "b", "text": "bee"},
                 {"external_id": "a", "text": "three", "meta": {"v": 3}})
    assert run(project, data) == {"created": 2, "updated": 2, "unchanged": 1, "errors": []}
    assert stored(project) == {"a": ("three", {"v": 3}), "b": ("bee", {})}
    assert Item.objects.get(project=project, external_id="a").content_hash == item_content_hash("three")


def test_items_of_other_projects_are_never_touched(project: Project) -> None:
    other = ProjectFactory(slug="other-imp", taxonomy=SMS_TAXONOMY)
    run(other, jsonl({"external_id": "a", "text": "theirs"}))
    assert run(project, jsonl({"external_id": "a", "text": "ours"})) == {
        "created": 1, "updated": 0, "unchanged": 0, "errors": []}
    assert stored(other) == {"a": ("theirs", {})}
    assert stored(project) == {"a": ("ours", {})}


# --- Streaming, chunks and transactions ----------------------------------------------------------


def test_query_count_does_not_grow_with_rows(project: Project) -> None:
    def queries(rows: int, offset: int) -> int:
        data = jsonl(*({"external_id": f"q{offset + i}", "text": f"t{i}"} for i in range(rows)))
        with CaptureQueriesContext(connection) as captured:
            assert run(project, data)["created"] == rows
        return len(captured.captured_queries)

    # SQLite's bulk_create batches by its 999-parameter limit; stay within one batch there.
    assert queries(10, 0) == queries(400 if using_postgres() else 70, 1_000)


def test_chunks_commit_separately_so_a_later_failure_keeps_earlier_chunks(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_store, "CHUNK_ROWS", 2)
    real_apply = import_store._apply_chunk
    calls = []

    def failing_second_chunk(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(import_store, "_apply_chunk", failing_second_chunk)
    with pytest.raises(RuntimeError):
        run(project, jsonl(*({"external_id": f"r{i}", "text": f"t{i}"} for i in range(5))))
    assert sorted(stored(project)) == ["r0", "r1"]


@pytest.mark.parametrize("chunk_rows", [2_000, 2], ids=["one-chunk", "many-chunks"])
def test_atomic_imports_nothing_when_any_row_is_bad(project: Project, chunk_rows: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_store, "CHUNK_ROWS", chunk_rows)
    run(project, jsonl({"external_id": "old", "text": "before"}))
    data = jsonl({"external_id": "a", "text": "one"}, {"external_id": "old", "text": "after"},
                 {"external_id": "b", "text": "two"}, {"external_id": "c", "text": "three"},
                 {"external_id": "d"}, {"external_id": "e", "text": "five"}, "{oops")
    summary = run(project, data, atomic=True)
    assert summary == {"created": 0, "updated": 0, "unchanged": 0, "errors": [
        {"line": 5, "error": "text: required"},
        {"line": 7, "error": "invalid JSON: Expecting property name enclosed in double quotes (column 2)"}]}
    assert stored(project) == {"old": ("before", {})}
    event = AuditEvent.objects.filter(project=project, action="items.import").latest("id")
    assert event.data == {"created": 0, "updated": 0, "unchanged": 0, "errors": 2, "filename": "items.jsonl",
                          "gold": False, "atomic": True, "rolled_back": True}


def test_atomic_imports_everything_when_all_rows_are_valid(project: Project) -> None:
    data = jsonl(*({"external_id": f"r{i}", "text": f"t{i}"} for i in range(5)))
    assert run(project, data, atomic=True) == {"created": 5, "updated": 0, "unchanged": 0, "errors": []}
    assert Item.objects.filter(project=project).count() == 5


def test_one_audit_event_per_import_with_the_counts(project: Project) -> None:
    before = AuditEvent.objects.count()
    run(project, jsonl({"external_id": "a", "text": "x"}, {"external_id": "b"}, {"external_id": "c", "text": "y"}),
        filename="batch.jsonl")
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.object_type, event.object_id, event.project_id, event.actor_id) == (
        "items.import", "project", str(project.pk), project.pk, None)
    assert event.data == {"created": 2, "updated": 0, "unchanged": 0, "errors": 1, "filename": "batch.jsonl",
                          "gold": False, "atomic": False, "rolled_back": False}


def test_error_list_is_capped_and_counts_the_rest(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_parse, "MAX_REPORTED_ERRORS", 3)
    summary = run(project, "bad\n" * 5 + jsonl({"external_id": "ok", "text": "fine"}))
    assert summary["created"] == 1
    assert summary["errors"] == [
        {"line": 1, "error": "invalid JSON: Expecting value (column 1)"},
        {"line": 2, "error": "invalid JSON: Expecting value (column 1)"},
        {"line": 3, "error": "invalid JSON: Expecting value (column 1)"},
        {"line": 4, "error": "... and 2 more errors from this line on (only the first 3 are listed)"},
    ]


def test_copy_columns_cover_every_item_column() -> None:
    columns = {f.column for f in Item._meta.concrete_fields if not f.primary_key}
    assert set(COPY_COLUMNS) == columns


# --- Gold --------------------------------------------------------------------------------------


def test_gold_import_stores_the_expected_answer_and_rejects_unknown_labels(project: Project) -> None:
    data = jsonl({"external_id": "g1", "text": "WIN a prize", "label": "spam"},
                 {"external_id": "g2", "text": "see you", "label": ["ham"]},
                 {"external_id": "g3", "text": "eggs", "label": "eggs"},
                 {"external_id": "g4", "text": "both", "label": ["ham", "spam"]},
                 {"external_id": "g5", "text": "none"},
                 {"external_id": "g6", "text": "number", "label": 5},
                 {"external_id": "g7", "text": "two unknown", "label": ["x", "ham", "y"]})
    summary = run(project, data, gold=True)
    assert summary == {"created": 2, "updated": 0, "unchanged": 0, "errors": [
        {"line": 3, "error": "label: unknown label 'eggs' (taxonomy v1 has: ham, spam)"},
        {"line": 4, "error": "label: taxonomy v1 is single-label; give one key, not 2"},
        {"line": 5, "error": "label: a gold row needs the expected answer (a label key or a list of keys)"},
        {"line": 6, "error": "label: must be a label key or a list of label keys"},
        {"line": 7, "error": "label: unknown labels 'x', 'y' (taxonomy v1 has: ham, spam)"},
    ]}
    assert {ext: (gold, labels) for ext, gold, labels in Item.objects.filter(project=project).values_list(
        "external_id", "is_gold", "gold_labels")} == {"g1": (True, ["spam"]), "g2": (True, ["ham"])}


def test_gold_answers_are_idempotent_and_a_plain_import_keeps_them(project: Project) -> None:
    gold = jsonl({"external_id": "g", "text": "WIN", "label": "spam"})
    run(project, gold, gold=True)
    assert run(project, gold, gold=True) == {"created": 0, "updated": 0, "unchanged": 1, "errors": []}
    # A plain import of the same item (its label ignored) leaves the gold answer alone.
    assert run(project, jsonl({"external_id": "g", "text": "WIN", "label": "ham"})) == {
        "created": 0, "updated": 0, "unchanged": 1, "errors": []}
    assert Item.objects.filter(project=project).values_list("is_gold", "gold_labels").get() == (True, ["spam"])
    # A corrected gold answer is an update; an existing plain item can become gold.
    run(project, jsonl({"external_id": "p", "text": "plain"}))
    summary = run(project, jsonl({"external_id": "g", "text": "WIN", "label": "ham"},
                                 {"external_id": "p", "text": "plain", "label": "ham"}), gold=True)
    assert summary == {"created": 0, "updated": 2, "unchanged": 0, "errors": []}
    assert dict(Item.objects.filter(project=project).values_list("external_id", "gold_labels")) == {
        "g": ["ham"], "p": ["ham"]}


def test_gold_labels_follow_the_taxonomy_shape(db: Any) -> None:
    tree = ProjectFactory(slug="tree", taxonomy={"name": "abuse", "multi_label": True, "labels": [
        {"key": "hate", "children": [{"key": "hate/slur"}, {"key": "hate/other"}]},
        {"key": "ok"}, {"key": "old", "deprecated": True}]})
    data = jsonl({"external_id": "1", "text": "a", "label": ["ok", "hate/slur", "ok"]},
                 {"external_id": "2", "text": "b", "label": "hate"},
                 {"external_id": "3", "text": "c", "label": "old"})
    assert run(tree, data, gold=True) == {"created": 1, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": "label: 'hate' is not a leaf label; give one of its children"},
        {"line": 3, "error": "label: 'old' is deprecated in taxonomy v1"}]}
    assert Item.objects.get(project=tree).gold_labels == ["hate/slur", "ok"]


def test_label_is_ignored_outside_a_gold_import(project: Project) -> None:
    assert run(project, jsonl({"external_id": "a", "text": "x", "label": "not-a-label"})) == {
        "created": 1, "updated": 0, "unchanged": 0, "errors": []}
    assert Item.objects.filter(project=project).values_list("is_gold", "gold_labels", "meta").get() == (
        False, None, {})


def test_embedding_is_requested_once_per_import_that_changed_text(project: Project,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[int] = []
    monkeypatch.setattr(import_store, "request_embedding", lambda *, project_id: requests.append(project_id))
    data = jsonl({"external_id": "a", "text": "one"}, {"external_id": "b", "text": "two"})
    run(project, data)
    assert requests == [project.pk]
    run(project, data)  # all unchanged
    run(project, jsonl({"external_id": "c"}), atomic=True)  # rolled back
    assert requests == [project.pk]
    run(project, jsonl({"external_id": "a", "text": "one, edited"}))
    assert requests == [project.pk, project.pk]


def test_random_keys_are_uniform_floats_in_the_unit_interval() -> None:
    keys = import_store._random_keys(10_000)
    assert len(keys) == 10_000 == len(set(keys))
    assert all(0.0 <= key < 1.0 for key in keys)
    assert 0.45 < sum(keys) / len(keys) < 0.55
    assert sum(1 for key in keys if key < 0.1) in range(850, 1150)


class _Breaking(io.BytesIO):
    """A stream that fails after its content, as a dropped upload connection does."""

    def __init__(self, data: bytes, exc: BaseException) -> None:
        super().__init__(data)
        self.exc = exc

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk:
            raise self.exc
        return chunk


def test_a_failing_stream_keeps_the_rows_read_before(project: Project) -> None:
    data = jsonl({"external_id": "a", "text": "one"}, {"external_id": "b", "text": "two"}).encode()
    source = _Breaking(data, OSError("connection reset by peer"))
    summary = items_import(actor=None, project=project, source=source, filename="items.jsonl").as_dict()
    assert summary == {"created": 2, "updated": 0, "unchanged": 0, "errors": [{
        "line": 3, "error": "reading the file failed (connection reset by peer): line 3 and everything after it "
                            "were not read"}]}


def test_an_unexpected_reader_error_propagates_and_stops_the_reader(project: Project) -> None:
    import threading

    source = _Breaking(jsonl({"external_id": "a", "text": "one"}).encode(), RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        items_import(actor=None, project=project, source=source, filename="items.jsonl")
    assert not [t for t in threading.enumerate() if t.name == "sift-items-import-reader"]


def batch(prefix: str, n: int) -> str:
    return jsonl(*({"external_id": f"{prefix}{i}", "text": f"{prefix} {i}"} for i in range(n)))


def _known_item_rows() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'labeling_item'::regclass")
        return float(cursor.fetchone()[0])


def test_a_large_import_refreshes_the_item_statistics_and_a_small_one_does_not(
        postgres_only: None, project: Project) -> None:
    """Without statistics the planner guesses a new project's tables tiny (tests/labeling/services/test_queue_plans.py).
    """
    with connection.cursor() as cursor:  # as a fresh database has it: never analysed
        cursor.execute("UPDATE pg_class SET reltuples = -1 WHERE oid = 'labeling_item'::regclass")
    small = import_store.ANALYZE_MIN_ROWS - 1
    assert run(project, batch("s", small))["created"] == small
    assert _known_item_rows() == -1
    large = import_store.ANALYZE_MIN_ROWS
    assert run(project, batch("l", large))["created"] == large
    assert _known_item_rows() == small + large
    # A batch under a tenth of what the statistics know leaves them to autovacuum.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pg_class SET reltuples = 1e6 WHERE oid = 'labeling_item'::regclass")
    assert run(project, batch("t", large))["created"] == large
    assert _known_item_rows() == 1e6
