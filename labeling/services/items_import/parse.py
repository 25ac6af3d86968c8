"""The parse side of an import: bytes -> physical lines -> validated rows, and the import's summary.

Everything that decides whether a line is a row lives here: the line reader (gzip, the line and decompressed
size caps), the JSON Lines and CSV parsers (orjson first, json where it must decide), the per-row validator
(fields, sizes, gold answers against the current taxonomy) and ``ImportSummary``, where every bad line is
reported by number. A new input format (a reader yielding ``_Row``) belongs here. Nothing here writes.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
from django.conf import settings

from labeling.models import META_MAX_DEPTH, Label, Project, json_depth
from labeling.services.items_import.parquet import PARQUET_MAGIC, ParquetProblem, parquet_records
from labeling.services.languages import UNDETERMINED, detect_language, language_mix
from learning.core.vocabulary import content_hash

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
FORMATS = ("jsonl", "csv", "parquet")
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
        if obj.get("image") is not None:  # images come only inside a zip (labeling/services/images/zip_import.py)
            summary.add_error(line_no, "image: images are imported in a .zip beside the JSON Lines file")
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
    if name.endswith((".parquet", ".pq")):
        return "parquet"
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
        fmt = ("parquet" if first.startswith(PARQUET_MAGIC)
               else "jsonl" if first.lstrip(UTF8_BOM + b" \t\r\n").startswith(b"{") else "csv")
        read = _Replay(first, read).read
    if fmt == "parquet":  # Parquet has no lines: its own reader (parquet.py), the same validator
        yield from _parquet_rows(source=None if gzipped else source, read=read, validator=validator,
                                 summary=summary)
        return
    reader = _LineReader(read, gzipped=gzipped, max_line_bytes=max_line_bytes,
                         max_decompressed_bytes=settings.SIFT_MAX_DECOMPRESSED_BYTES)
    parse = _parse_jsonl if fmt == "jsonl" else _parse_csv
    yield from parse(iter(reader), validator, summary, max_line_bytes)
    if reader.problem:
        summary.add_error(*reader.problem)


def _parquet_rows(*, source: Any, read: Callable[[int], bytes], validator: _Validator,
                  summary: ImportSummary) -> Iterator[_Row]:
    for record in parquet_records(source=source, read=read, max_columns=MAX_CSV_COLUMNS,
                                  max_spool_bytes=settings.SIFT_MAX_DECOMPRESSED_BYTES):
        if isinstance(record, ParquetProblem):
            summary.add_error(record.line, record.message)
            continue
        try:
            yield validator.row(record.line, **record.fields)
        except _RowError as exc:
            summary.add_error(record.line, exc.message)
