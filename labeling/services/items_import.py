"""Importing items from JSON Lines or CSV (either optionally gzipped): ``items_import``.

The invariants, and what keeps them:

* **Every valid row is imported; every bad row is reported by line.** A row is parsed and
  validated on its own: a bad line (bad JSON, invalid UTF-8, a missing field, an unknown
  gold label, a 10 MB text...) becomes ``{"line", "error"}`` and the next line carries on.
  Lines are split on raw bytes and decoded one at a time, so one bad byte costs one row.
  A problem with the *stream* (truncated or corrupt gzip, the decompressed-size cap)
  stops reading there; the rows before it are kept (unless ``atomic``) and the error names
  the line where reading stopped. The partial line at a gzip truncation is dropped, never
  imported half-cut.

* **Memory stays flat.** Rows flow through generators into chunks of at most
  ``CHUNK_ROWS`` rows (and ``CHUNK_BYTES`` of text); nothing holds the file. A helper thread
  reads and parses at most ``READ_AHEAD_CHUNKS`` chunks ahead of the writer, so parsing
  (Python) overlaps the database's work. Each chunk costs one SELECT of the existing rows for
  its external ids, one insert and one update: no per-row queries. On PostgreSQL the insert
  and update are COPYs (2-3x the throughput of the ORM's bulk_create, measured side by side
  by bench/import_items.py); elsewhere (SQLite) they are bulk_create/bulk_update. Lines longer than ``max_line_bytes``
  are skipped while streaming, without buffering them. Only the first ``MAX_REPORTED_ERRORS``
  errors are listed (the count of the rest is reported), so a file of garbage cannot grow
  the summary without bound either.

* **Idempotent on (project, external_id).** Same text, meta (and, for gold imports, gold
  answer) means ``unchanged`` and no write. A changed text is ``updated`` with a new
  ``content_hash``; the embedding worker re-embeds by hash. A non-gold import never touches
  ``is_gold``/``gold_labels``.

* **A label never lands on text its reviewer did not see.** An item keeps its text while it has
  any answer (changing it would re-point existing labels at different content) *or* while a
  reviewer holds an unexpired lease on it (they are reading the old text, and their submit would
  label the new one). Such a row is a per-line error saying which, and when the lease runs out.
  The check runs under the item's row lock, in a statement issued after the lock was granted
  (``_text_change_refusals``), for the reason the queue's essay gives (labeling/services/queues.py,
  "Why a lock alone is not enough"): a checkout commits its lease without updating the item row, so
  only a fresh snapshot taken after our lock sees every lease committed before it, and every later
  checkout must wait for (or, with SKIP LOCKED, skip) our lock until the new text has committed.
  A lease that expires stops holding the item, and its late submit is refused as expired
  (labeling/services/annotations.py), so an expired lease does not block a text change.

* **Duplicate external ids inside one file: rows apply in file order, the last one wins.**
  Each occurrence is counted as what it did (the first ``created``, a later different one
  ``updated``, a later identical one ``unchanged``). Rejecting duplicates instead would need
  a set of every id seen, which grows with the file.

* **Transactions.** Normally one transaction per chunk, so a failure later in the file never
  loses earlier chunks. With ``atomic`` everything runs in one transaction that is rolled
  back if any row is bad (after the first bad row nothing more is written; the rest of
  the file is still read to report every error). A chunk that collides with a concurrent
  import of the same external id (unique constraint) is retried from a fresh read.

* **Fast paths decide exactly as the slow ones.** orjson reads each line first (4x json's speed);
  a line it refuses, or where it may have read an integer beyond 64 bits as a float, is read by json,
  which decides and words the error as always. orjson writes meta only where it cannot differ (no
  inf/nan can be in the value). The stored-rows lookup probes the unique index once per external id
  (a LATERAL subquery), never trusting statistics that still call a project being imported empty.

One ``AuditEvent`` ("items.import") is written per import, never one per row.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import queue
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labeling.models import META_MAX_DEPTH, Item, Label, Lease, Project, json_depth
from labeling.services.audit import Actor, audit_record
from labeling.services.languages import (
    UNDETERMINED,
    detect_language,
    language_mix,
    recommended_embedder_for_mix,
)
from learning.core.vocabulary import content_hash
from learning.scheduling import request_embedding

CHUNK_ROWS = 2_000
# A chunk also flushes once its texts reach this size, so 2,000 long texts cannot pile up.
CHUNK_BYTES = 32 * 1024 * 1024
READ_BYTES = 256 * 1024
MAX_REPORTED_ERRORS = 10_000
MAX_EXTERNAL_ID_CHARS = 255
# A CSV header wider than this is refused before any row is read: every column but external_id, text and label
# becomes a meta key of every row, and no real item carries a thousand fields.
MAX_CSV_COLUMNS = 1_000
# Every error message is cut to this many characters: a message that quotes the input (a header, a value) must not
# grow with it. 10,000 errors of a wide header once made a 269 MB answer and a 748 MB worker.
MAX_ERROR_CHARS = 300
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
FORMATS = ("jsonl", "csv")
# Chunks parsed ahead of the one being written (memory: at most this many + 2 chunks).
READ_AHEAD_CHUNKS = 2
# Retries of one chunk when a concurrent import inserted the same external id first.
CHUNK_ATTEMPTS = 3
# An import that adds at least this many rows, and at least this share of the table, refreshes the items table's
# statistics at once (the rule autovacuum applies later, if it runs at all). See _refresh_statistics.
ANALYZE_MIN_ROWS = 1_000
ANALYZE_MIN_SHARE = 0.1
# Stands in for a CSV line that was too long to keep. A lone *high* surrogate can never come
# out of UTF-8 decoding, nor out of surrogateescape (which only yields U+DC80..U+DCFF).
_OVERLONG = "\ud800"
_SURROGATES = re.compile("[\ud800-\udfff]")
_LABEL_SEPARATORS = re.compile(r"[|,;]")
_TWO_TO_63 = float(2**63)


# The key of the vector cache has one home (learning/core/vocabulary.py); the old name stays for callers.
item_content_hash = content_hash


class BinarySource(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass
class ImportSummary:
    """The contract's summary: ``{"created", "updated", "unchanged", "errors": [{"line", "error"}]}``."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    # The first error past MAX_REPORTED_ERRORS, for the "N more" note.
    first_unlisted_line: int | None = None
    # Valid rows per detected language ("" undetermined), and the embedder that mix calls for (languages.py).
    languages: Counter[str] = field(default_factory=Counter)
    recommended_embedder: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_error(self, line: int, message: str) -> None:
        # The reader thread (parse errors) and the writer (per-chunk errors) both report here.
        with self._lock:
            self.error_count += 1
            if len(self.errors) < MAX_REPORTED_ERRORS:
                self.errors.append({"line": line, "error": _short(message)})
            elif self.first_unlisted_line is None:
                self.first_unlisted_line = line

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def as_dict(self) -> dict[str, Any]:
        errors = sorted(self.errors, key=lambda e: e["line"])
        unlisted = self.error_count - len(self.errors)
        if unlisted:
            errors.append({
                "line": self.first_unlisted_line,
                "error": f"... and {unlisted:,} more errors from this line on (only the first "
                         f"{MAX_REPORTED_ERRORS:,} are listed)",
            })
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged, "errors": errors}

    def report(self) -> dict[str, Any]:
        """What the API and the command answer: the contract's summary plus a ``languages`` key,
        ``{"counts": {code: rows}, "undetermined": rows, "recommended_embedder": "multilingual" | null}``."""
        return {**self.as_dict(), "languages": {
            "counts": language_mix(self.languages),
            "undetermined": self.languages.get(UNDETERMINED, 0),
            "recommended_embedder": self.recommended_embedder,
        }}


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per row
class _Row:
    line: int
    external_id: str
    text: str
    meta: dict[str, Any]
    meta_json: str  # json.dumps(meta), computed once for validation and reused by COPY
    content_hash: str
    gold_labels: list[str] | None
    language: str  # labeling/services/languages.py, detected here in the parsing thread


@dataclass(frozen=True)
class _Taxonomy:
    """What a gold answer is checked against: the project's current taxonomy version."""

    number: int | None
    keys: frozenset[str]
    non_leaf: frozenset[str]
    deprecated: frozenset[str]
    multi_label: bool
    allow_non_leaf: bool

    @classmethod
    def of(cls, project: Project) -> _Taxonomy:
        version = project.current_taxonomy_version
        if version is None:
            return cls(None, frozenset(), frozenset(), frozenset(), False, False)
        labels = list(Label.objects.filter(version=version).values_list("id", "key", "parent_id", "deprecated"))
        key_of = {pk: key for pk, key, _, _ in labels}
        return cls(
            number=version.number,
            keys=frozenset(key_of.values()),
            non_leaf=frozenset(key_of[parent] for _, _, parent, _ in labels if parent is not None),
            deprecated=frozenset(key for _, key, _, deprecated in labels if deprecated),
            multi_label=version.multi_label,
            allow_non_leaf=version.allow_non_leaf,
        )

    def check(self, keys: list[str]) -> str | None:
        """An error message for a gold answer, or None when it is valid."""
        if self.number is None:
            return "label: the project has no published taxonomy to check gold answers against"
        unknown = [key for key in keys if key not in self.keys]
        if unknown:
            known = sorted(self.keys)
            listing = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            names = ", ".join(repr(key) for key in unknown)
            plural = "s" if len(unknown) > 1 else ""
            return f"label: unknown label{plural} {names} (taxonomy v{self.number} has: {listing})"
        if len(keys) > 1 and not self.multi_label:
            return f"label: taxonomy v{self.number} is single-label; give one key, not {len(keys)}"
        if not self.allow_non_leaf:
            parents = [key for key in keys if key in self.non_leaf]
            if parents:
                return f"label: {parents[0]!r} is not a leaf label; give one of its children"
        retired = [key for key in keys if key in self.deprecated]
        if retired:
            return f"label: {retired[0]!r} is deprecated in taxonomy v{self.number}"
        return None


# --- Reading: bytes -> physical lines ----------------------------------------------------------


class _Replay:
    """A read()-able that first returns ``head`` (bytes already read for sniffing), then the rest."""

    def __init__(self, head: bytes, rest: Callable[[int], bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        # Never more than ``size``: gzip reads its header with exact-size reads.
        if not self._head:
            return self._rest(size)
        if size is None or size < 0:
            out, self._head = self._head, b""
            return out + self._rest(-1)
        out, self._head = self._head[:size], self._head[size:]
        return out


class _LineReader:
    """Splits a byte stream into numbered physical lines, streaming.

    Yields ``(line_number, bytes)``; a line longer than ``max_line_bytes`` yields
    ``(line_number, None)`` and is skipped without being buffered. A stream problem
    (gzip truncated/corrupt, decompressed size over the cap) ends the iteration and is
    left in ``problem`` as ``(line, message)``.
    """

    def __init__(self, read: Callable[[int], bytes], *, gzipped: bool, max_line_bytes: int,
                 max_decompressed_bytes: int) -> None:
        self._read = read
        self._gzipped = gzipped
        self.max_line_bytes = max_line_bytes
        self._max_decompressed = max_decompressed_bytes
        self.problem: tuple[int, str] | None = None

    def _stop(self, line: int, why: str) -> None:
        self.problem = (line, f"{why}: line {line:,} and everything after it were not read")

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        line_no = 0
        pending: list[bytes] = []
        pending_len = 0
        discarding = False
        total = 0
        while True:
            try:
                chunk = self._read(READ_BYTES)
            except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                self._stop(line_no + 1, f"the gzip data is truncated or corrupt ({exc})" if self._gzipped
                           else f"reading the file failed ({exc})")
                return
            if not chunk:
                break
            total += len(chunk)
            if self._gzipped and total > self._max_decompressed:
                self._stop(line_no + 1, f"the decompressed data is larger than the limit of "
                                        f"{self._max_decompressed:,} bytes")
                return
            parts = chunk.split(b"\n")
            for index, part in enumerate(parts[:-1]):
                line_no += 1
                if discarding:
                    discarding = False
                    yield line_no, None
                    continue
                if index == 0 and pending:
                    pending.append(part)
                    line = b"".join(pending)
                    pending, pending_len = [], 0
                else:
                    line = part
                yield line_no, (line if len(line) <= self.max_line_bytes else None)
            tail = parts[-1]
            if discarding:
                continue
            if len(parts) > 1:
                pending, pending_len = [], 0
            pending.append(tail)
            pending_len += len(tail)
            if pending_len > self.max_line_bytes:
                discarding = True
                pending, pending_len = [], 0
        if discarding:
            yield line_no + 1, None
        elif pending_len:
            yield line_no + 1, b"".join(pending)


# --- Parsing: lines -> validated rows -----------------------------------------------------------


class _RowError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _storable_string(value: str, name: str) -> None:
    """PostgreSQL stores neither NUL nor unpaired surrogates; reject them here, per row, not mid-chunk."""
    if "\x00" in value:
        raise _RowError(f"{name}: contains a NUL character")
    if value.isascii():  # the common case, checked in C: no surrogate possible
        return
    found = _SURROGATES.search(value)
    if found:
        raise _RowError(f"{name}: contains an unpaired surrogate (\\u{ord(found.group()):04x})")


class _Validator:
    def __init__(self, *, gold: bool, taxonomy: _Taxonomy | None, max_text_chars: int) -> None:
        self.gold = gold
        self.taxonomy = taxonomy
        self.max_text_chars = max_text_chars

    def external_id(self, value: Any) -> str:
        if value is None or value == "":
            raise _RowError("external_id: required")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _RowError(f"external_id: must be a string or a number, not {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _RowError("external_id: a number out of JSON's range")
        external_id = value if isinstance(value, str) else str(value)
        if external_id.isspace():
            raise _RowError("external_id: must not be blank")
        if len(external_id) > MAX_EXTERNAL_ID_CHARS:
            raise _RowError(f"external_id: {len(external_id):,} characters; the limit is {MAX_EXTERNAL_ID_CHARS}")
        _storable_string(external_id, "external_id")
        return external_id

    def text(self, value: Any) -> str:
        if value is None:
            raise _RowError("text: required")
        if not isinstance(value, str):
            raise _RowError(f"text: must be a string, not {_json_type(value)}")
        if not value or value.isspace():
            raise _RowError("text: must not be empty")
        if len(value) > self.max_text_chars:
            raise _RowError(f"text: {len(value):,} characters; the limit is {self.max_text_chars:,}")
        _storable_string(value, "text")
        return value

    def meta(self, value: Any, *, finite: bool = False) -> tuple[dict[str, Any], str]:
        """The meta object and its JSON text. ``finite``: the caller knows no float in it is inf or nan
        (orjson parsed it, or it holds only strings); orjson writes those as null instead of refusing."""
        if value is None or value == {}:
            return {}, "{}"
        if not isinstance(value, dict):
            raise _RowError(f"meta: must be a JSON object, not {_json_type(value)}")
        if json_depth(value) > META_MAX_DEPTH:
            raise _RowError(f"meta: nested more than {META_MAX_DEPTH} levels deep (lists and objects inside "
                            "each other); flatten it")
        encoded = None
        if finite:
            try:
                # ~5x faster than json.dumps. It refuses (TypeError) what it cannot write exactly: an
                # unpaired surrogate, an integer beyond 64 bits, deep nesting; json then decides below.
                encoded = orjson.dumps(value).decode()
            except TypeError:
                encoded = None
        if encoded is None:
            try:
                # allow_nan=False: a number like 1e400 parses to inf, which jsonb cannot store.
                encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
            except RecursionError as exc:
                raise _RowError("meta: nested too deeply") from exc
            except ValueError as exc:
                raise _RowError("meta: contains a number out of JSON's range") from exc
        # json.dumps writes NUL as the escape \u0000, which PostgreSQL's jsonb refuses.
        if "\\u0000" in encoded:
            raise _RowError("meta: contains a NUL character")
        _storable_string(encoded, "meta")
        return value, encoded

    def gold_labels(self, value: Any) -> list[str] | None:
        if not self.gold:
            return None  # A label field is ignored unless the import is gold (contract).
        if value is None or value == "" or value == []:
            raise _RowError("label: a gold row needs the expected answer (a label key or a list of keys)")
        if isinstance(value, str):
            keys = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            keys = list(value)
        else:
            raise _RowError("label: must be a label key or a list of label keys")
        keys = sorted(set(keys))
        assert self.taxonomy is not None
        problem = self.taxonomy.check(keys)
        if problem:
            raise _RowError(problem)
        return keys

    def row(self, line: int, *, external_id: Any, text: Any, meta: Any, label: Any, finite: bool = False) -> _Row:
        ext = self.external_id(external_id)
        body = self.text(text)
        meta_value, meta_json = self.meta(meta, finite=finite)
        return _Row(line=line, external_id=ext, text=body, meta=meta_value, meta_json=meta_json,
                    content_hash=item_content_hash(body), gold_labels=self.gold_labels(label),
                    language=detect_language(body))


def _utf8_error(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line"


_SLOW = object()  # "orjson did not read this line"


def _inexact(value: Any) -> bool:
    """Whether orjson may have read an integer beyond 64 bits here, as a float (json keeps it exact).

    Such a float is at least 2**63 in size; a genuine float that large is re-read by json too, which
    gives the same float. Cheaper than scanning the raw line for long digit runs (a regex cost as much
    as parsing the line).
    """
    kind = type(value)
    if kind is float:
        return bool(abs(value) >= _TWO_TO_63)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:
        kind = type(item)
        if kind is float:
            if abs(item) >= _TWO_TO_63:
                return True
        elif (kind is dict or kind is list) and _inexact(item):
            return True
    return False


def _orjson_object(raw: bytes | str) -> Any:
    """``raw`` read by orjson, or ``_SLOW`` where json must read it instead (refused, or maybe inexact).

    Only ``external_id`` and ``meta`` can hold numbers that are stored, so only they are checked.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _SLOW
    try:
        if type(obj) is dict and (_inexact(obj.get("external_id")) or _inexact(obj.get("meta"))):
            return _SLOW
    except RecursionError:  # nested deeper than Python's stack: json reports it
        return _SLOW
    return obj


def _parse_jsonl(lines: Iterator[tuple[int, bytes | None]], validator: _Validator, summary: ImportSummary,
                 max_line_bytes: int) -> Iterator[_Row]:
    for line_no, raw in lines:
        if raw is None:
            summary.add_error(line_no, f"line is longer than {max_line_bytes:,} bytes (texts are limited to "
                                       f"{validator.max_text_chars:,} characters)")
            continue
        if line_no == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        # The fast reader first (orjson, ~4x json's speed: it was a quarter of the import's client CPU).
        # Whatever it refuses (bad UTF-8, bad JSON, a blank line, 1e400, an unpaired surrogate escape,
        # deep nesting) or might read inexactly (long integers) goes to json, which then decides and
        # words the error exactly as before: orjson only ever accepts lines json reads the same way.
        obj = _orjson_object(raw)
        finite = obj is not _SLOW  # orjson refuses inf and nan
        if not finite:
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                summary.add_error(line_no, _utf8_error(raw, exc))
                continue
            if not decoded or decoded.isspace():
                continue  # Blank lines (a trailing newline, spacing) are not rows.
            try:
                obj = json.loads(decoded, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                summary.add_error(line_no, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except (ValueError, RecursionError) as exc:
                summary.add_error(line_no, "invalid JSON: "
                                           f"{exc if isinstance(exc, ValueError) else 'nested too deeply'}")
                continue
        if not isinstance(obj, dict):
            summary.add_error(line_no, f"expected a JSON object, got {_json_type(obj)}")
            continue
        try:
            yield validator.row(line_no, external_id=obj.get("external_id"), text=obj.get("text"),
                                meta=obj.get("meta"), label=obj.get("label"), finite=finite)
        except _RowError as exc:
            summary.add_error(line_no, exc.message)


def _short(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS - 1] + "…"


def _names(names: Sequence[str], limit: int = 5) -> str:
    """At most ``limit`` names, each cut short, and how many more: an error message names a few, never all."""
    shown = ", ".join(name if len(name) <= 40 else name[:39] + "…" for name in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def _csv_label(value: str | None) -> Any:
    """A CSV gold answer: ``spam``, ``a|b`` (or , ;), or a JSON list ``["a", "b"]``."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise _RowError("label: starts with '[' but is not a JSON list") from exc
    return [part.strip() for part in _LABEL_SEPARATORS.split(value) if part.strip()]


def _parse_csv(lines: Iterator[tuple[int, bytes | None]], validator: _Validator, summary: ImportSummary,
               max_line_bytes: int) -> Iterator[_Row]:
    def decoded() -> Iterator[str]:
        for line_no, raw in lines:
            if raw is None:
                yield _OVERLONG + "\n"
                continue
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            # surrogateescape keeps a bad byte in place (as U+DCxx) so the csv module still sees the
            # line's quotes and commas; the record holding it is then rejected below.
            yield raw.decode("utf-8", "surrogateescape") + "\n"

    # Global to the csv module; raised (never lowered) so a long text is a row error of ours, not csv's.
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)
    reader = csv.reader(decoded(), strict=True)
    header: list[str] | None = None
    columns: dict[str, int] = {}
    last_line = 0
    while True:
        start = last_line + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last_line = reader.line_num
            summary.add_error(start, f"invalid CSV: {exc}")
            continue
        last_line = reader.line_num
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        joined = "\x1f".join(record)
        if _OVERLONG in joined:
            summary.add_error(start, f"line is longer than {max_line_bytes:,} bytes (texts are limited to "
                                     f"{validator.max_text_chars:,} characters)")
            continue
        bad_byte = re.search("[\udc80-\udcff]", joined)
        if bad_byte:
            summary.add_error(start, f"not valid UTF-8: byte 0x{ord(bad_byte.group()) - 0xDC00:02x} in this record")
            continue
        if header is None:
            header = [name.strip() for name in record]
            if len(header) > MAX_CSV_COLUMNS:
                summary.add_error(start, f"the CSV header has {len(header):,} columns; the limit is "
                                         f"{MAX_CSV_COLUMNS:,}; nothing was read")
                return
            # Counted in one pass: header.count() per name was quadratic (100k columns: 5 minutes of CPU).
            counts = Counter(header)
            duplicates = sorted(name for name, n in counts.items() if n > 1)
            missing = [name for name in ("external_id", "text") if name not in counts]
            if duplicates or missing:
                why = (f"duplicate column{'s' if len(duplicates) > 1 else ''} {_names(duplicates)}" if duplicates
                       else f"missing: {', '.join(missing)}")
                summary.add_error(start, f"the CSV header must name the columns external_id and text, each once "
                                         f"({why}; found: {_names(header)}); nothing was read")
                return
            columns = {name: index for index, name in enumerate(header)}
            continue
        if len(record) != len(header):
            summary.add_error(start, f"has {len(record):,} fields; the header has {len(header):,} "
                                     f"({_names(header)})")
            continue
        try:
            label = _csv_label(record[columns["label"]]) if "label" in columns and validator.gold else None
            meta = {name: record[index] for name, index in columns.items()
                    if name not in ("external_id", "text", "label")}
            yield validator.row(start, external_id=record[columns["external_id"]], text=record[columns["text"]],
                                meta=meta, label=label, finite=True)  # CSV meta holds only strings
        except _RowError as exc:
            summary.add_error(start, exc.message)


def _format_from_name(filename: str) -> str | None:
    name = filename.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    return None


def _rows(source: BinarySource, *, filename: str, file_format: str | None, validator: _Validator,
          summary: ImportSummary) -> Iterator[_Row]:
    """Validated rows of ``source``; every problem goes into ``summary`` as it is met."""
    max_line_bytes = max(16 * validator.max_text_chars, 1024 * 1024)
    head = source.read(READ_BYTES)
    while 0 < len(head) < len(GZIP_MAGIC):  # a stream may hand over fewer bytes than asked
        more = source.read(READ_BYTES)
        if not more:
            break
        head += more
    raw = _Replay(head, source.read)
    gzipped = head.startswith(GZIP_MAGIC)
    read: Callable[[int], bytes]
    if gzipped:
        decompressed = gzip.GzipFile(fileobj=cast(Any, raw), mode="rb")
        # read1, not read: read() loops to fill its size and drops what it had when the stream
        # turns out truncated; read1 hands over every decompressed byte before the error.
        read = decompressed.read1
    else:
        read = raw.read
    fmt = file_format or _format_from_name(filename)
    if fmt is None:
        # Content sniffing: a JSON Lines file starts with "{"; anything else is taken for CSV.
        first = b""
        try:
            # Enough to see the first non-blank byte (read1 may hand over very little at a time).
            while len(first) < READ_BYTES and not first.lstrip(UTF8_BOM + b" \t\r\n"):
                more = read(READ_BYTES)
                if not more:
                    break
                first += more
        except (EOFError, OSError, zlib.error) as exc:
            summary.add_error(1, f"the gzip data is truncated or corrupt ({exc}): nothing was read")
            return
        fmt = "jsonl" if first.lstrip(UTF8_BOM + b" \t\r\n").startswith(b"{") else "csv"
        read = _Replay(first, read).read
    reader = _LineReader(read, gzipped=gzipped, max_line_bytes=max_line_bytes,
                         max_decompressed_bytes=settings.SIFT_MAX_DECOMPRESSED_BYTES)
    parse = _parse_jsonl if fmt == "jsonl" else _parse_csv
    yield from parse(iter(reader), validator, summary, max_line_bytes)
    if reader.problem:
        summary.add_error(*reader.problem)


# --- Writing: chunks of rows -> the items table -------------------------------------------------


@dataclass(slots=True)
class _Write:
    """Values to store for one external id: a new item (``pk`` None) or an update of item ``pk``."""

    pk: int | None
    external_id: str
    text: str
    content_hash: str
    meta: dict[str, Any]
    meta_json: str
    is_gold: bool
    gold_labels: list[str] | None
    language: str


@dataclass(slots=True)
class _State:
    """One external id as the chunk sees it: what is stored (or about to be), and its pending write."""

    pk: int | None
    content_hash: str
    meta: dict[str, Any]
    is_gold: bool
    gold_labels: list[str] | None
    n_done: int
    write: _Write | None = None


@dataclass
class _ChunkResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _apply_chunk(project: Project, chunk: list[_Row], *, gold: bool, write: bool) -> _ChunkResult:
    """Classify a chunk's rows against what is stored (one SELECT), then write them (one insert, one update)."""
    result = _ChunkResult()
    state = _stored(project, list({row.external_id for row in chunk}))
    text_changes = sorted({current.pk for row in chunk if (current := state.get(row.external_id)) is not None
                           and current.pk is not None and current.content_hash != row.content_hash})
    refusals = _text_change_refusals(text_changes)
    writes: list[_Write] = []
    for row in chunk:
        current = state.get(row.external_id)
        if current is None:
            pending = _Write(pk=None, external_id=row.external_id, text=row.text, content_hash=row.content_hash,
                             meta=row.meta, meta_json=row.meta_json, is_gold=gold, gold_labels=row.gold_labels,
                             language=row.language)
            writes.append(pending)
            state[row.external_id] = _State(pk=None, content_hash=row.content_hash, meta=row.meta, is_gold=gold,
                                            gold_labels=row.gold_labels, n_done=0, write=pending)
            result.created += 1
            continue
        is_gold = True if gold else current.is_gold
        gold_labels = row.gold_labels if gold else current.gold_labels
        if (current.content_hash == row.content_hash and current.meta == row.meta
                and current.is_gold == is_gold and current.gold_labels == gold_labels):
            result.unchanged += 1
            continue
        if current.content_hash != row.content_hash and current.pk in refusals:
            result.errors.append((row.line, f"external_id {row.external_id!r} {refusals[current.pk]}"))
            continue
        if current.write is None:
            current.write = _Write(pk=current.pk, external_id=row.external_id, text=row.text,
                                   content_hash=row.content_hash, meta=row.meta, meta_json=row.meta_json,
                                   is_gold=is_gold, gold_labels=gold_labels, language=row.language)
            writes.append(current.write)
        else:  # A duplicate external id in this chunk: the later row replaces the pending values.
            current.write.text, current.write.content_hash = row.text, row.content_hash
            current.write.language = row.language
            current.write.meta, current.write.meta_json = row.meta, row.meta_json
            current.write.is_gold, current.write.gold_labels = is_gold, gold_labels
        current.content_hash, current.meta = row.content_hash, row.meta
        current.is_gold, current.gold_labels = is_gold, gold_labels
        result.updated += 1
    if write and writes:
        creates = [w for w in writes if w.pk is None]
        updates = [w for w in writes if w.pk is not None]
        if connection.vendor == "postgresql":
            _pg_store(project, creates, updates)
        else:
            _orm_store(project, creates, updates)
    return result


_STORED_COLUMNS = ("external_id", "id", "content_hash", "meta", "is_gold", "gold_labels", "n_done")

# Run after the item rows are locked, as a new statement: its snapshot sees every lease and answer committed before
# the lock was granted (see "A label never lands on text its reviewer did not see" above).
_TEXT_CHANGE_SQL = """
SELECT i.id, i.n_done,
       (SELECT MAX(l.expires_at) FROM {lease} l WHERE l.item_id = i.id AND l.state = 'active' AND l.expires_at > %s)
FROM {item} i WHERE i.id IN ({ids})
"""


def _text_change_refusals(item_ids: list[int]) -> dict[int, str]:
    """Lock the items whose text a chunk would change and say, per item, why its text must stay.

    Inside the chunk's transaction, so the locks are held until the new text commits. Locked in id order, so two
    imports touching the same items cannot deadlock. Items with no answer and no unexpired lease are absent.
    """
    if not item_ids:
        return {}
    item, lease = Item._meta.db_table, Lease._meta.db_table
    placeholders = ", ".join(["%s"] * len(item_ids))
    now = timezone.now()
    refusals: dict[int, str] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # SQLite: BEGIN IMMEDIATE already holds the database's write lock
            cursor.execute(f"SELECT id FROM {item} WHERE id IN ({placeholders}) ORDER BY id "  # noqa: S608
                           "FOR NO KEY UPDATE", item_ids)
        cursor.execute(_TEXT_CHANGE_SQL.format(item=item, lease=lease, ids=placeholders),
                       [connection.ops.adapt_datetimefield_value(now), *item_ids])
        for item_id, n_done, held_until in cursor.fetchall():
            if n_done > 0:
                refusals[item_id] = (f"already has {n_done} annotation(s); its text cannot change (import the new "
                                     "text under a new external_id)")
            elif held_until is not None:
                until = datetime.fromisoformat(held_until) if isinstance(held_until, str) else held_until
                until = until.replace(tzinfo=UTC) if timezone.is_naive(until) else until.astimezone(UTC)
                refusals[item_id] = (f"is being labelled (a reviewer holds it until {until:%Y-%m-%d %H:%M:%S} UTC); "
                                     "its text cannot change under them: import it again after that, or under a "
                                     "new external_id")
    return refusals


def _stored(project: Project, external_ids: list[str]) -> dict[str, _State]:
    """What is stored for these external ids: one query per chunk."""
    rows: list[tuple[Any, ...]]
    if connection.vendor == "postgresql":
        # One probe of the (project_id, external_id) unique index per id, whatever the statistics say.
        # The plain "external_id = ANY(%s)" (and the equivalent join) is planned from statistics that,
        # during an import into a new project, still say the project has a few hundred items: PostgreSQL
        # then scans all of the project's items (by the project_id index) for every chunk, and the
        # import goes quadratic (2.4 of 6.5 DB CPU-seconds at 200k rows, growing with the project).
        # A LATERAL subquery with LIMIT is never flattened into a join, and an equality on every
        # column of a unique index is always planned as that index's probe.
        quote = connection.ops.quote_name
        columns = ", ".join(quote(c) for c in _STORED_COLUMNS[1:])
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT k.external_id, i.* FROM unnest(%s::text[]) AS k(external_id) CROSS JOIN LATERAL "  # noqa: S608
                f"(SELECT {columns} FROM {quote(Item._meta.db_table)} WHERE project_id = %s "
                "AND external_id = k.external_id LIMIT 1) AS i", [external_ids, project.pk],
            )
            # Django reads jsonb as text (its JSONField decodes); decode the same way here.
            rows = [(ext, pk, content_hash, _json(meta), is_gold, _json(gold_labels), n_done)
                    for ext, pk, content_hash, meta, is_gold, gold_labels, n_done in cursor.fetchall()]
    else:
        rows = list(Item.objects.filter(project_id=project.pk, external_id__in=external_ids)
                    .values_list(*_STORED_COLUMNS))
    return {
        ext: _State(pk=pk, content_hash=content_hash, meta=meta or {}, is_gold=is_gold, gold_labels=gold_labels,
                    n_done=n_done)
        for ext, pk, content_hash, meta, is_gold, gold_labels, n_done in rows
    }


def _json(value: Any) -> Any:
    """A stored jsonb value (text), decoded as the importer decodes a row, so equal values compare equal."""
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        return value
    try:
        decoded = orjson.loads(value)
        if not _inexact(decoded):
            return decoded
    except (orjson.JSONDecodeError, RecursionError):
        pass
    return json.loads(value)


def _orm_store(project: Project, creates: list[_Write], updates: list[_Write]) -> None:
    """The portable path (SQLite): bulk_create and bulk_update."""
    now = timezone.now()
    if creates:
        Item.objects.bulk_create([
            Item(project_id=project.pk, external_id=w.external_id, text=w.text, meta=w.meta,
                 content_hash=w.content_hash, is_gold=w.is_gold, gold_labels=w.gold_labels,
                 n_required=project.overlap, language=w.language)
            for w in creates
        ], batch_size=CHUNK_ROWS)
    if updates:
        Item.objects.bulk_update([
            Item(pk=w.pk, project_id=project.pk, external_id=w.external_id, text=w.text, meta=w.meta,
                 content_hash=w.content_hash, is_gold=w.is_gold, gold_labels=w.gold_labels, updated_at=now,
                 language=w.language)
            for w in updates
        ], ["text", "content_hash", "meta", "is_gold", "gold_labels", "updated_at", "language"], batch_size=500)


# Every column of a new item, in COPY order. tests/labeling/test_items_import.py checks this against
# the model, so a new Item field cannot be silently left out of the PostgreSQL path.
COPY_COLUMNS = ("project_id", "external_id", "text", "meta", "content_hash", "is_gold", "gold_labels",
                "n_required", "n_done", "boost", "random_key", "split", "created_at", "updated_at", "language")
_UPDATE_COLUMNS = ("text", "content_hash", "meta", "is_gold", "gold_labels", "updated_at", "language")
_UPDATE_TABLE = "sift_item_import_update"


def _random_keys(n: int) -> list[float]:
    """``n`` independent uniform floats in [0, 1) from the OS's CSPRNG, as Item.random_key's default
    (labeling.models.items.new_random_key) draws them, in one system call instead of one per item."""
    return [(word >> 11) * _TWO_TO_MINUS_53 for word in struct.unpack(f"<{n}Q", os.urandom(8 * n))]


_TWO_TO_MINUS_53 = 2.0 ** -53


def _pg_store(project: Project, creates: list[_Write], updates: list[_Write]) -> None:
    """The PostgreSQL path: COPY, several times faster than a multi-row INSERT built by the ORM.

    New rows are COPYed straight into the items table (a concurrent import that inserted the same
    external id first makes the COPY fail on the unique constraint; ``_flush`` then retries the chunk).
    Changed rows are COPYed into a temporary table and applied with one UPDATE ... FROM.
    """
    now = timezone.now()
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    with connection.wrap_database_errors, connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor, for COPY
        if creates:
            columns = ", ".join(quote(c) for c in COPY_COLUMNS)
            project_id, overlap = project.pk, project.overlap
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for w, random_key in zip(creates, _random_keys(len(creates)), strict=True):
                    copy.write_row((
                        project_id, w.external_id, w.text, w.meta_json, w.content_hash, w.is_gold,
                        None if w.gold_labels is None else json.dumps(w.gold_labels),
                        overlap, 0, 0, random_key, None, now, now, w.language,
                    ))
        if updates:
            # ON COMMIT DROP: nothing outlives the transaction; within it (an atomic import runs
            # every chunk in one transaction) the table is emptied after each use.
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_UPDATE_TABLE} (id bigint PRIMARY KEY, text text, "
                "content_hash varchar(64), meta jsonb, is_gold boolean, gold_labels jsonb, updated_at timestamptz, "
                "language varchar(8)) "
                "ON COMMIT DROP"
            )
            with raw.copy(f"COPY {_UPDATE_TABLE} (id, {', '.join(_UPDATE_COLUMNS)}) FROM STDIN") as copy:
                for w in updates:
                    copy.write_row((
                        w.pk, w.text, w.content_hash, w.meta_json, w.is_gold,
                        None if w.gold_labels is None else json.dumps(w.gold_labels), now, w.language,
                    ))
            assignments = ", ".join(f"{quote(c)} = u.{c}" for c in _UPDATE_COLUMNS)
            cursor.execute(
                f"UPDATE {table} AS i SET {assignments} FROM {_UPDATE_TABLE} AS u WHERE i.id = u.id"  # noqa: S608
            )
            cursor.execute(f"TRUNCATE {_UPDATE_TABLE}")


def _flush(project: Project, chunk: list[_Row], summary: ImportSummary, *, gold: bool, write: bool) -> None:
    for attempt in range(CHUNK_ATTEMPTS):
        try:
            # A savepoint when inside the atomic import's transaction: a collision rolls back this chunk only.
            with transaction.atomic():
                result = _apply_chunk(project, chunk, gold=gold, write=write)
            break
        except IntegrityError:
            # A concurrent import created one of these external ids between our read and our insert.
            if attempt == CHUNK_ATTEMPTS - 1:
                raise
    summary.created += result.created
    summary.updated += result.updated
    summary.unchanged += result.unchanged
    for line, message in result.errors:
        summary.add_error(line, message)


class _RollBack(Exception):
    pass


def _chunked(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    chunk: list[_Row] = []
    chunk_bytes = 0
    for row in rows:
        chunk.append(row)
        chunk_bytes += len(row.text)
        if len(chunk) >= CHUNK_ROWS or chunk_bytes >= CHUNK_BYTES:
            yield chunk
            chunk, chunk_bytes = [], 0
    if chunk:
        yield chunk


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _read_ahead(chunks: Iterator[list[_Row]]) -> Generator[list[_Row], None, None]:
    """Reads and parses in a helper thread, at most ``READ_AHEAD_CHUNKS`` chunks ahead of the writer.

    Parsing is Python work and the writes are mostly the database's: run one after the other they
    add up; overlapped (the writer waits on the database with the GIL released) the slower of the
    two sets the pace. The bounded queue keeps memory flat; the thread touches no database
    connection; an exception in it is re-raised here; closing this generator stops and joins it.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:  # handed to the writer's thread, which re-raises it
            put(_Failed(exc))

    reader = threading.Thread(target=produce, name="sift-items-import-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(list[_Row], item)
    finally:
        stop.set()
        reader.join()


def _import_rows(project: Project, rows: Iterator[_Row], summary: ImportSummary, *, gold: bool,
                 atomic: bool) -> None:
    chunks = _read_ahead(_chunked(rows))
    try:
        for chunk in chunks:
            summary.languages.update(row.language for row in chunk)
            # Atomic and already failed: keep classifying (to report every error), stop writing.
            _flush(project, chunk, summary, gold=gold, write=not (atomic and not summary.ok))
    finally:
        chunks.close()  # stops the reader thread at once if a write failed


def items_import(*, actor: Actor, project: Project, source: BinarySource, filename: str = "",
                 file_format: str | None = None, gold: bool = False, atomic: bool = False) -> ImportSummary:
    """Import items into ``project`` from ``source`` (a binary stream of JSON Lines or CSV, maybe gzipped).

    ``file_format`` is "jsonl" or "csv"; when None it comes from ``filename``'s extension, else from
    the content. Gzip is recognised by its magic bytes whatever the name. With ``gold`` each row's
    ``label`` is its expected answer. With ``atomic`` nothing is imported if any row is bad.
    Returns the summary; it never raises for bad rows.
    """
    if file_format is not None and file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {FORMATS}")
    summary = ImportSummary()
    validator = _Validator(gold=gold, taxonomy=_Taxonomy.of(project) if gold else None,
                           max_text_chars=settings.SIFT_MAX_TEXT_CHARS)
    rows = _rows(source, filename=filename, file_format=file_format, validator=validator, summary=summary)
    rolled_back = False
    if atomic:
        try:
            with transaction.atomic():
                _import_rows(project, rows, summary, gold=gold, atomic=True)
                if not summary.ok:
                    raise _RollBack
        except _RollBack:
            rolled_back = True
            summary.created = summary.updated = summary.unchanged = 0
    else:
        _import_rows(project, rows, summary, gold=gold, atomic=False)
    with transaction.atomic():
        audit_record(actor=actor, action="items.import", obj=project, project=project, data={
            "created": summary.created, "updated": summary.updated, "unchanged": summary.unchanged,
            "errors": summary.error_count, "filename": filename, "gold": gold, "atomic": atomic,
            "rolled_back": rolled_back,
        })
        if summary.created or summary.updated:
            # The worker embeds every item whose content_hash has no cached vector; this only flags the
            # project (coalesced) once this transaction commits, after every chunk's own commit.
            request_embedding(project_id=project.pk)
    _refresh_statistics(created=summary.created)
    summary.recommended_embedder = recommended_embedder_for_mix(language_mix(summary.languages), project.embedder)
    return summary


def _refresh_statistics(*, created: int) -> None:
    """ANALYZE the items table after an import large enough to change its statistics.

    Until then the planner plans on the old statistics (or on guesses, for a table never analysed): a project
    it believes empty gets plans that read every one of its rows per look-up. Autovacuum would fix that in a
    minute or so, when it runs (it is off on some test machines). ANALYZE samples a fixed number of rows
    (~0.1-0.3 s at 1M items), takes no lock that blocks readers or writers, and can run inside a transaction.
    """
    if connection.vendor != "postgresql" or created < ANALYZE_MIN_ROWS:
        return
    table = Item._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        known_rows = float(cursor.fetchone()[0])  # -1: never analysed
        if known_rows < 0 or created >= ANALYZE_MIN_SHARE * known_rows:
            cursor.execute(f"ANALYZE {table}")

