"""Export writers: JSON Lines, CSV (formula-safe cells) and Parquet, one ``_Batch`` at a time.

The parts of a row that come from shared objects (judgement, version set, lineage, gold) are rendered once per
object and spliced in; only the item's own strings are encoded per row. The output is exactly what encoding each
row as a dict in column order would give (tests/labeling/services/test_export_roundtrip.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from labeling.services import splits as splits_service
from labeling.services.exports.judge import _Batch, _Gold, _Judgement, _Lineage, _Versions
from labeling.services.exports.params import CSV_FORMULA_TRIGGERS, RAW_COLUMN, SCHEMA_VERSION
from labeling.services.exports.read import (
    _G_EXTERNAL_ID,
    _G_HASH,
    _G_ID,
    _G_META,
    _G_RAW,
    _G_SPLIT,
    _G_TEXT,
    PreparedExport,
    _encode_string,
    _json,
)

# --------------------------------------------------------------------------- writers
#
# Writers turn a _Batch into bytes. The parts of a row that come from shared objects (judgement,
# version set, lineage, gold) are rendered once per object and spliced in; only the item's own
# strings (external id, text, hash, meta) are encoded per row. The output is exactly what encoding
# each row as a dict in column order would give (tests/labeling/services/test_export_roundtrip.py).


def _judgement_json(judgement: _Judgement, keys: list[str]) -> tuple[str, str]:
    if judgement.json is None:
        soft = judgement.soft
        judgement.json = (
            f'"labels":{_json(list(judgement.labels))},"label_source":{_json(judgement.source)},'
            f'"soft_labels":{_json(dict(zip(keys, soft, strict=True)) if soft is not None else None)},'
            f'"n_annotators":{judgement.n_annotators},"agreement":{_json(judgement.agreement)}',
            f',"n_mapped":{judgement.n_mapped},"n_unmappable":{judgement.n_unmappable}',
        )
    return judgement.json


def _versions_json(versions: _Versions) -> str:
    if versions.json is None:
        versions.json = _json(versions.numbers)
    return versions.json


def _lineage_json(lineage: _Lineage) -> str:
    if lineage.json is None:
        lineage.json = (f',"selection_reason":{_json(lineage.reason)},'
                        f'"inclusion_probability":{_json(lineage.inclusion)},"model_version":{_json(lineage.model)}')
    return lineage.json


def _gold_json(gold: _Gold) -> str:
    if gold.json is None:
        gold.json = f',"is_gold":{_json(gold.gold)},"gold_labels":{_json(gold.labels)}'
    return gold.json


_SPLIT_JSON: dict[str | None, str] = {None: "null", **{name: f'"{name}"' for name in splits_service.SPLIT_NAMES}}


class _JsonlWriter:
    """One JSON object per line, keys in column order; ``meta`` is spliced in as stored JSON."""

    def __init__(self, prepared: PreparedExport) -> None:
        self.keys = prepared.keys
        self.version = f',"taxonomy_version":{prepared.target_version_number},"annotation_taxonomy_versions":'
        self.raw = prepared.params.raw
        self.suspected = prepared.suspected

    def begin(self) -> bytes:
        return b""

    def write(self, batch: _Batch) -> bytes:
        keys, version, enc, raw = self.keys, self.version, _encode_string, self.raw
        lines = []
        for row, judgement, versions, lineage, gold in zip(batch.rows, batch.judgements, batch.versions,
                                                          batch.lineages, batch.golds, strict=True):
            head, counts = judgement.json or _judgement_json(judgement, keys)
            split = row[_G_SPLIT] or None
            split_json = _SPLIT_JSON.get(split) or _json(split)
            suspected = "true" if row[_G_ID] in self.suspected else "false"
            extra = f',"raw":{_json(row[_G_RAW])}' if raw else ""
            lines.append(
                f'{{"external_id":{enc(row[_G_EXTERNAL_ID])},"text":{enc(row[_G_TEXT])},'
                f'"content_hash":{enc(row[_G_HASH])},"meta":{row[_G_META] or "{}"},{head}{version}'
                f'{versions.json or _versions_json(versions)}{counts}{lineage.json or _lineage_json(lineage)}'
                f'{gold.json or _gold_json(gold)},"split":{split_json},"suspected_error":{suspected}{extra}}}\n')
        return "".join(lines).encode()

    def finish(self) -> bytes:
        return b""


def _cell(value: Any) -> str:
    """A CSV cell: null is empty, booleans are true/false, lists and objects compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _json(value)
    return str(value)


def _csv_escaped(cell: str) -> str:
    """``csv_cells=escaped``: one apostrophe before a cell a spreadsheet would read as a formula (or that
    starts with an apostrophe, so that removing one leading apostrophe always gives the true value back)."""
    return "'" + cell if cell.startswith(CSV_FORMULA_TRIGGERS) else cell


class _CrLfToLf:
    """The csv writer's file: each row arrives as one ``write`` ending in "\\r\\n", and leaves ending in "\\n".

    Why "\\r\\n" at all: the csv module quotes a cell only for the delimiter, the quote character and the
    characters of ``lineterminator``. With "\\n" there, a cell holding a bare carriage return went out unquoted,
    and every reader (the csv module, pandas) split the row there and shifted the columns."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, line: str) -> None:
        self.parts.append(line[:-2] + "\n")


class _CsvWriter:
    """RFC 4180 quoting (any cell holding a carriage return or a line feed is quoted), "\\n" line ends; lists
    and objects as compact JSON, null as an empty cell.

    Cells that a spreadsheet would run as a formula are escaped by default (``CSV_CELLS_RULE``): most CSV
    downloads end up opened in a spreadsheet by someone, and a message that starts with "=HYPERLINK(...)" must
    not become a live link there. ``csv_cells=raw`` writes every cell verbatim, for programs.
    """

    def __init__(self, prepared: PreparedExport) -> None:
        self.columns = prepared.columns
        self.keys = prepared.keys
        self.version = str(prepared.target_version_number)
        self.raw = prepared.params.raw
        self.escaped = prepared.params.csv_cells == "escaped"
        self.suspected = prepared.suspected

    def _lines(self, rows: Sequence[Sequence[Any]]) -> bytes:
        if self.escaped:
            rows = [[_csv_escaped(c) if isinstance(c, str) and c else c for c in row] for row in rows]
        sink = _CrLfToLf()
        csv.writer(sink, lineterminator="\r\n").writerows(rows)
        return "".join(sink.parts).encode()

    def begin(self) -> bytes:
        return self._lines([self.columns])

    def _judgement(self, j: _Judgement) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if j.csv is None:
            soft = _json(dict(zip(self.keys, j.soft, strict=True))) if j.soft is not None else ""
            j.csv = ((_json(list(j.labels)), j.source, soft, str(j.n_annotators), _cell(j.agreement)),
                     (str(j.n_mapped), str(j.n_unmappable)))
        return j.csv

    @staticmethod
    def _lineage(lineage: _Lineage) -> tuple[str, str, str]:
        if lineage.csv is None:
            lineage.csv = (_cell(lineage.reason), _cell(lineage.inclusion), _cell(lineage.model))
        return lineage.csv

    @staticmethod
    def _gold(gold: _Gold) -> tuple[str, str]:
        if gold.csv is None:
            gold.csv = (_cell(gold.gold), _cell(gold.labels))
        return gold.csv

    def write(self, batch: _Batch) -> bytes:
        version, raw = self.version, self.raw
        cells = []
        for row, j, versions, lineage, gold in zip(batch.rows, batch.judgements, batch.versions, batch.lineages,
                                                   batch.golds, strict=True):
            head, counts = j.csv or self._judgement(j)
            cells.append((row[_G_EXTERNAL_ID], row[_G_TEXT], row[_G_HASH], row[_G_META] or "{}", *head, version,
                          versions.json or _versions_json(versions),
                          *counts, *(lineage.csv or self._lineage(lineage)), *(gold.csv or self._gold(gold)),
                          row[_G_SPLIT] or "", "true" if row[_G_ID] in self.suspected else "false",
                          *((_json(row[_G_RAW]),) if raw else ())))
        return self._lines(cells)

    def finish(self) -> bytes:
        return b""


class _ByteSink:
    """A write-only file object for ParquetWriter that hands back what was written since last asked."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        return data


def parquet_schema(prepared: PreparedExport) -> Any:
    import pyarrow as pa

    strings = pa.list_(pa.string())
    fields = [
        ("external_id", pa.string()), ("text", pa.string()), ("content_hash", pa.string()), ("meta", pa.string()),
        ("labels", strings), ("label_source", pa.string()),
        ("soft_labels", pa.struct([(key, pa.float64()) for key in prepared.keys])),
        ("n_annotators", pa.int32()), ("agreement", pa.float64()), ("taxonomy_version", pa.int32()),
        ("annotation_taxonomy_versions", pa.list_(pa.int32())), ("n_mapped", pa.int32()),
        ("n_unmappable", pa.int32()), ("selection_reason", pa.string()), ("inclusion_probability", pa.float64()),
        ("model_version", pa.int64()), ("is_gold", pa.bool_()), ("gold_labels", strings), ("split", pa.string()),
        ("suspected_error", pa.bool_()),
    ]
    if prepared.params.raw:
        fields.append((RAW_COLUMN, pa.list_(pa.struct([
            ("reviewer", pa.string()), ("labels", strings), ("mapped_labels", strings),
            ("taxonomy_version", pa.int32()), ("model_version", pa.int64()), ("created_at", pa.string()),
            ("selection_reason", pa.string()), ("lead_time_ms", pa.int64()), ("comment", pa.string()),
        ]))))
    metadata = {b"sift.schema_version": str(SCHEMA_VERSION).encode(),
                b"sift.export_params": _json(prepared.params.as_dict()).encode()}
    return pa.schema(fields, metadata=metadata)


def _distinct(objects: list[Any]) -> tuple[list[Any], Any]:
    """The distinct objects (by identity, first-seen order) and each position's index into them."""
    import pyarrow as pa

    index: dict[Any, int] = {}
    positions = [index.setdefault(o, len(index)) for o in objects]
    return list(index), pa.array(positions, type=pa.int32())


class _ParquetWriter:
    """Row groups streamed through a byte sink: the file is never held whole, in memory or on disk.

    Columns are built column-wise: the item's own values straight from the row tuples, everything
    else as a small array over the batch's distinct judgements / version sets / lineages / gold
    answers, gathered to the rows with ``take`` (no per-row dicts or lists).
    """

    def __init__(self, prepared: PreparedExport) -> None:
        import pyarrow.parquet as pq

        self.schema = parquet_schema(prepared)
        self.sink = _ByteSink()
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.n_keys = len(prepared.keys)
        self.version = prepared.target_version_number
        self.raw = prepared.params.raw
        self.suspected = prepared.suspected

    def begin(self) -> bytes:
        return self.sink.take()

    def write(self, batch: _Batch) -> bytes:
        import pyarrow as pa

        schema = self.schema
        n = len(batch.rows)
        columns = list(zip(*batch.rows, strict=True))
        judgements, j_at = _distinct(batch.judgements)
        versions, v_at = _distinct(batch.versions)
        lineages, l_at = _distinct(batch.lineages)
        golds, g_at = _distinct(batch.golds)

        def of(at: Any, values: list[Any], name: str) -> Any:
            return pa.array(values, type=schema.field(name).type).take(at)

        softs = np.array([j.soft if j.soft is not None else (0.0,) * self.n_keys for j in judgements],
                         dtype=np.float64).reshape(len(judgements), self.n_keys).T.copy()
        soft_type = schema.field("soft_labels").type
        soft = pa.StructArray.from_arrays(
            [pa.array(softs[k]).take(j_at) for k in range(self.n_keys)], fields=list(soft_type),
            mask=pa.array([j.soft is None for j in judgements], type=pa.bool_()).take(j_at))
        arrays = [
            pa.array(columns[_G_EXTERNAL_ID], type=pa.string()), pa.array(columns[_G_TEXT], type=pa.string()),
            pa.array(columns[_G_HASH], type=pa.string()),
            pa.array([m or "{}" for m in columns[_G_META]], type=pa.string()),
            of(j_at, [list(j.labels) for j in judgements], "labels"),
            of(j_at, [j.source for j in judgements], "label_source"),
            soft,
            of(j_at, [j.n_annotators for j in judgements], "n_annotators"),
            of(j_at, [j.agreement for j in judgements], "agreement"),
            pa.array(np.full(n, self.version, dtype=np.int32)),
            of(v_at, [v.numbers for v in versions], "annotation_taxonomy_versions"),
            of(j_at, [j.n_mapped for j in judgements], "n_mapped"),
            of(j_at, [j.n_unmappable for j in judgements], "n_unmappable"),
            of(l_at, [x.reason for x in lineages], "selection_reason"),
            of(l_at, [x.inclusion for x in lineages], "inclusion_probability"),
            of(l_at, [x.model for x in lineages], "model_version"),
            of(g_at, [g.gold for g in golds], "is_gold"),
            of(g_at, [g.labels for g in golds], "gold_labels"),
            pa.array([s or None for s in columns[_G_SPLIT]], type=pa.string()),
            pa.array([i in self.suspected for i in columns[_G_ID]], type=pa.bool_()),
        ]
        if self.raw:
            arrays.append(pa.array(columns[_G_RAW], type=schema.field(RAW_COLUMN).type))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        return self.sink.take()

    def finish(self) -> bytes:
        self.writer.close()
        return self.sink.take()


_WRITERS: dict[str, Any] = {"jsonl": _JsonlWriter, "csv": _CsvWriter, "parquet": _ParquetWriter}


def _regroup(batches: Iterator[_Batch], size: int) -> Iterator[_Batch]:
    """Batches of exactly ``size`` rows (the last one shorter): Parquet row groups of a fixed size."""
    pending: list[_Batch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += len(batch)
        while held >= size:
            joined = _Batch.join(pending)
            yield joined.part(0, size)
            rest = joined.part(size, len(joined))
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield _Batch.join(pending)
