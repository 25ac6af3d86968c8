"""Reading item rows out of a Parquet file, row group by row group: ``parquet_records``.

The import service (``items_import``) owns validation, storing and the summary; this module only turns a Parquet
file into the same plain records the JSON Lines reader produces (``external_id``, ``text``, ``meta``, ``label``),
numbered from 1 in file order (the "line" of an error is the data row's number: row 1 is the first row). It keeps
the import's promises:

* **Memory stays flat.** Parquet keeps its index (the footer) at the end, so it needs a seekable file: a seekable
  source (a file on disk, a spooled upload) is read in place; anything else (standard input, a gzipped file, a
  request stream) is first copied to a temporary file on disk, never to memory. Rows are then read with
  ``ParquetFile.iter_batches`` a few thousand at a time, one row group in flight, only the columns needed.

* **Every valid row is imported; every bad row is reported by its number.** Conversion problems (a value that is
  not valid UTF-8, a ``meta`` string that is not a JSON object) are per-row errors. Problems with the *file* (not
  Parquet at all, no ``external_id``/``text`` column, a corrupt row group) are reported once, at the row where
  reading stopped; rows read before a corrupt row group are kept, as with a truncated gzip.

* **Columns mean what they mean in CSV.** ``external_id`` and ``text`` are required columns. ``meta`` may be a
  struct (or map) column, or a string column holding a JSON object per row; every other column (except ``label``
  and pandas' stored index, ``__index_level_N__``) becomes a meta key, as CSV's extra columns do. Where both exist,
  a key of the ``meta`` column wins over a column of the same name. Values keep their Parquet types where JSON has
  them (numbers, booleans, lists, nested structs); dates and times become ISO 8601 strings, decimals strings, and a
  NaN in an extra column (pandas' missing value) becomes null. ``label`` (gold imports) is a key or a list of keys.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_MAGIC = b"PAR1"
# Rows converted per step: small enough that a batch of long texts stays a few MB, large enough to amortise Arrow.
BATCH_ROWS = 2_000
COPY_BYTES = 1024 * 1024
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
_REQUIRED = ("external_id", "text")


class ParquetRecord:
    """Row ``line`` (1-based) as keyword arguments of the import's row validator: external_id, text, meta, label."""

    __slots__ = ("fields", "line")

    def __init__(self, line: int, fields: dict[str, Any]) -> None:
        self.line = line
        self.fields = fields


class ParquetProblem:
    """An error to report at row ``line`` (a problem with the whole file is reported at the row where it stopped)."""

    __slots__ = ("line", "message")

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message


def parquet_records(*, source: Any | None, read: Callable[[int], bytes], max_columns: int,
                    max_spool_bytes: int) -> Iterator[ParquetRecord | ParquetProblem]:
    """The rows of a Parquet file, each a ``ParquetRecord`` or a ``ParquetProblem``.

    ``source``: the file itself (None when it was gzipped); read in place, from its start, when it is seekable.
    Otherwise ``read`` (the file's bytes from the start) is copied to a temporary file, up to ``max_spool_bytes``
    (the decompressed-size cap).
    """
    spool: IO[bytes] | None = None
    try:
        if source is not None and _seekable(source):
            source.seek(0)
            handle: Any = source
        else:
            spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finally)
            try:
                copied = _copy(read, spool, max_spool_bytes)
            except (EOFError, OSError, zlib.error) as exc:
                yield ParquetProblem(1, f"the gzip data is truncated or corrupt ({exc}): nothing was read")
                return
            if copied is None:
                yield ParquetProblem(1, f"the Parquet data is larger than the limit of {max_spool_bytes:,} bytes: "
                                        "nothing was read")
                return
            spool.seek(0)
            handle = spool
        yield from _records(handle, max_columns)
    finally:
        if spool is not None:
            spool.close()


def _seekable(source: Any) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _copy(read: Callable[[int], bytes], out: IO[bytes], limit: int) -> int | None:
    total = 0
    while chunk := read(COPY_BYTES):
        total += len(chunk)
        if total > limit:
            return None
        out.write(chunk)
    return total


def _records(handle: Any, max_columns: int) -> Iterator[ParquetRecord | ParquetProblem]:
    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield ParquetProblem(1, f"not a readable Parquet file ({exc}): nothing was read")
        return
    schema = parquet.schema_arrow
    names = list(schema.names)
    if len(names) > max_columns:
        yield ParquetProblem(1, f"the Parquet file has {len(names):,} columns; the limit is {max_columns:,}; "
                                "nothing was read")
        return
    missing = [name for name in _REQUIRED if name not in names]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if missing or duplicates:
        why = f"missing: {', '.join(missing)}" if missing else f"duplicate columns: {', '.join(duplicates[:5])}"
        yield ParquetProblem(1, f"the Parquet file must have the columns external_id and text, each once ({why}; "
                                f"found: {', '.join(names[:5])}{'...' if len(names) > 5 else ''}); nothing was read")
        return
    extra = [name for name in names if name not in (*_REQUIRED, "meta", "label") and not _PANDAS_INDEX.fullmatch(name)]
    wanted = [*_REQUIRED, *(["meta"] if "meta" in names else []), *(["label"] if "label" in names else []), *extra]
    plain = {name: _json_native(schema.field(name).type) for name in wanted}
    # No float anywhere in meta's sources: no inf or nan can reach meta, so the validator may write it with orjson
    # (its ``finite`` fast path, as for CSV), ~5x json.dumps' speed.
    # A string meta column is read by json.loads, which accepts NaN and Infinity: not finite either.
    meta_kind = schema.field("meta").type if "meta" in names else None
    finite = not any(_has_float(schema.field(name).type) for name in extra) and (
        meta_kind is None or not (_has_float(meta_kind) or pa.types.is_string(meta_kind)
                                  or pa.types.is_large_string(meta_kind) or pa.types.is_binary(meta_kind)
                                  or pa.types.is_large_binary(meta_kind)))
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted, use_threads=False):
            columns = {name: batch.column(name).to_pylist() for name in wanted}
            for index in range(batch.num_rows):
                row += 1
                try:
                    yield ParquetRecord(row, {**_fields(columns, index, extra, plain), "finite": finite})
                except _BadValue as exc:
                    yield ParquetProblem(row, str(exc))
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield ParquetProblem(row + 1, f"the Parquet data is corrupt ({exc}): reading stopped here")


class _BadValue(Exception):
    pass


def _fields(columns: dict[str, list[Any]], index: int, extra: list[str], plain: dict[str, bool]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name in extra:
        value = columns[name][index]
        if isinstance(value, float) and math.isnan(value):
            value = None  # pandas writes its missing values as NaN
        meta[name] = value if plain[name] else _jsonable(value, name)
    if "meta" in columns:
        own = columns["meta"][index]
        if isinstance(own, str | bytes):
            own = _meta_json(_text(own, "meta"))
        elif isinstance(own, list) and all(isinstance(pair, tuple) and len(pair) == 2 for pair in own):
            own = dict(own)  # a map column reads as (key, value) pairs
        if own is not None and not plain["meta"]:
            own = _jsonable(own, "meta")
        if extra and isinstance(own, dict):
            own = {**meta, **own}
        elif own is None:
            own = meta
    else:
        own = meta
    return {
        "external_id": _text(columns["external_id"][index], "external_id"),
        "text": _text(columns["text"][index], "text"),
        "meta": own,
        "label": _label(columns["label"][index]) if "label" in columns else None,
    }


def _text(value: Any, name: str) -> Any:
    """A binary column's bytes as text (strict UTF-8); anything else as it is (the validator judges types)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadValue(f"{name}: not valid UTF-8: byte 0x{value[exc.start]:02x} at byte {exc.start + 1}") from exc
    return value


def _meta_json(value: str) -> Any:
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise _BadValue(f"meta: the string is not valid JSON ({exc})") from exc


def _label(value: Any) -> Any:
    return [_text(v, "label") for v in value] if isinstance(value, list) else _text(value, "label")


def _json_native(kind: pa.DataType) -> bool:
    """Whether every value of this Arrow type reads (to_pylist) as a JSON value: no dates, decimals, bytes."""
    if pa.types.is_struct(kind):
        return all(_json_native(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _json_native(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
                or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind))


def _has_float(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return any(_has_float(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_float(kind.value_type)
    if pa.types.is_map(kind):
        return _has_float(kind.key_type) or _has_float(kind.item_type)
    return bool(pa.types.is_floating(kind))


def _jsonable(value: Any, name: str) -> Any:
    """``value`` with everything JSON lacks spelled as JSON: ISO dates, decimal strings, UTF-8 text, seconds."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return {str(k): _jsonable(v, name) for k, v in value}  # a map
        return [_jsonable(v, name) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return _text(value, f"meta.{name}")
    raise _BadValue(f"meta.{name}: a {type(value).__name__} value has no JSON form")
