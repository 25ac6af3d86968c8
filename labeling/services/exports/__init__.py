"""Training-set exports: one row per item, streamed with bounded memory; snapshots and dataset cards.

What a row is
-------------
One row per item that has at least one annotation passing the annotation filters (or, when no
annotation filter is set, a decided adjudication). Columns, in this order (``COLUMNS``):

- ``external_id``, ``text``, ``content_hash``, ``meta`` (an object in JSON Lines; a JSON string in
  CSV and Parquet: the stored JSON text as the database returns it, so its spacing and, on
  PostgreSQL, its key order are the database's);
- ``labels``: the answer, as label keys of ``taxonomy_version`` (the project's current version, or
  the version named by the ``taxonomy_version`` filter). A decided adjudication overrides any
  aggregate (``label_source == "adjudication"``); a *pending* adjudication withholds it
  (``label_source == "pending_adjudication"``, ``labels`` empty, ``agreement`` null: the project itself
  disputes the answer, so the row must not claim one); otherwise ``label_source`` is the aggregation
  (``majority`` or ``dawid_skene``), ``tie`` (no hard label, see labeling/services/aggregation.py)
  or ``none`` (no annotation could be read in the target version). ``LABEL_SOURCES`` defines each;
- ``soft_labels``: ``{key: score}`` for every key of the target version: vote shares (majority) or
  posteriors (Dawid-Skene); null when nothing could be read in the target version;
- ``n_annotators``: annotations of the item that pass the filters;
- ``agreement``: **the share of the row's ``n_annotators`` answers whose label set, read in the target
  version, equals the row's ``labels`` exactly**: an answer that cannot be read there (``n_unmappable``)
  counts as not agreeing, so ``agreement``, ``n_annotators`` and the votes behind ``labels`` are about the
  same answers (one readable answer of two is agreement 0.5, never 1.0). Null when no answer is readable
  or an adjudication is pending. A tie therefore has agreement 0 unless it was adjudicated;
- ``taxonomy_version``, ``annotation_taxonomy_versions`` (the versions the answers were given in),
  ``n_mapped`` (answers read through a label migration: ``Annotation.mapped_labels``) and
  ``n_unmappable`` (answers that could not be read in the target version: an older version never
  mapped, or a split/deprecation made them undeterminable). The rule is the one
  labeling/services/taxonomy_migrations.py states: ``labels`` if given under the target version,
  else ``mapped_labels`` if ``mapped_taxonomy_version`` is the target, else unreadable;
- ``selection_reason``, ``inclusion_probability``, ``model_version``: lineage of the item's *first*
  annotation (lowest id, whatever the filters), i.e. why the item entered the labelled set, with
  the propensity needed to re-weight actively selected items;
- ``is_gold``, ``gold_labels``: gold items are flagged (``gold=flag``, the default) or left out
  (``gold=exclude``); they always inform Dawid-Skene, where their known answer is pinned;
- ``split``: ``Item.split`` (labeling/services/splits.py), null until an export with ``split`` assigns it;
- ``raw`` (only with ``raw``): each filtered annotation, by id: reviewer, labels, mapped labels,
  the version number it was given in, model version, ``created_at`` (UTC, ISO 8601), selection reason,
  lead time and the reviewer's ``comment`` (``RAW_ANSWER_FIELDS``).

How it streams
--------------
On PostgreSQL one query does the joining: it aggregates every item's answers (GROUP BY item over
the annotation index, so rows leave in item order at once) into short text *keys* (the answers read
in the target version, the versions they were given in, the first answer's lineage) and merge-joins
the items and decided adjudications. It is read through a server-side cursor in chunks of tuples
(``connection.chunked_cursor``, no model instances, no Django converters), so Python handles one
tuple per item, never one per answer. Keys repeat endlessly ('L["spam"]' twice is most of a
project), so each distinct key is judged once per export (memo tables) and every row after that
costs a dict lookup. Writers then work a batch at a time: Parquet builds each column directly
(``take`` over the batch's distinct judgements, no per-row dicts); JSON Lines and CSV splice
fragments rendered once per judgement around the item's own encoded strings. On SQLite, and for
``raw`` (which needs each answer), the same per-item tuples are built in Python by merge-joining
three ordered reads; tests/labeling/services/test_export_roundtrip.py checks both give identical bytes.

Rows leave in batches (the first is small, so a download starts at once); Parquet writes row groups
of 20,000 rows through ``ParquetWriter`` into a byte sink. Memory is bounded by one batch, except
for Dawid-Skene, which keeps every filtered answer as three int32s in numpy arrays plus an (items x
labels) float matrix (aggregation.py), and split assignment, which keeps ~50 bytes per exported item
in numpy arrays. On PostgreSQL the read runs in one ``REPEATABLE READ READ ONLY`` transaction with
JIT off, so a Dawid-Skene fit and the rows see the same data. Split assignment happens before, in
its own short locked transaction (splits.py), so a row always shows the split stored for its item.

Reproducible
------------
Rows are ordered by item id, contain no timestamps of the export, floats are rounded to 6 places,
and Dawid-Skene is deterministic; two exports with the same parameters over the same data are
byte-identical (only the dataset card carries ``generated_at``). Parameters are parsed from an
explicit allow-list (``PARAMETERS``); nothing a user types becomes an ORM path, and the order is fixed.

The package, along its seams (each module imports only the ones above it):

- ``params``: the constants, ``ExportParams`` and its allow-list parser.
- ``read``: binding parameters to a project (``PreparedExport``), the read transaction, SQL and Python
  per-item aggregates, and the JSON/timestamp encoding primitives both sides share.
- ``judge``: the memo tables, majority, Dawid-Skene posteriors, split assignment, ``_Batch``.
- ``writers``: JSON Lines, CSV and Parquet.
- ``stream``: ``export_prepare``, ``export_stream`` and the dataset card.
- ``snapshots``: the atomic file write and snapshot request, run, retry and ensure.

Callers import from the package (``from labeling.services.exports import export_stream``); the names below are
its public interface.
"""

from __future__ import annotations

from labeling.services.exports.params import (
    AGGREGATIONS,
    AGREEMENT_DEFINITION,
    COLUMNS,
    CONTENT_TYPES,
    CSV_CELLS,
    CSV_CELLS_RULE,
    CSV_FORMULA_TRIGGERS,
    DS_MAX_LABELS,
    EXTENSIONS,
    FIRST_BATCH_ROWS,
    FIRST_FETCH,
    FORMATS,
    GOLD_MODES,
    LABEL_SOURCES,
    PARAMETERS,
    PARQUET_ROW_GROUP,
    PENDING_ADJUDICATION,
    PROPAGATED_MODES,
    RAW_ANSWER_FIELDS,
    RAW_COLUMN,
    READ_CHUNK,
    ROUND,
    SCHEMA_VERSION,
    SNAPSHOT_STALE_AFTER,
    TEXT_BATCH_ROWS,
    TIE_RULE,
    ExportParams,
    export_params_parse,
)
from labeling.services.exports.read import PreparedExport
from labeling.services.exports.snapshots import (
    ExportResult,
    export_snapshot_create,
    export_snapshot_ensure,
    export_snapshot_path,
    export_snapshot_request,
    export_snapshot_retry,
    export_snapshot_run,
    export_write_file,
)
from labeling.services.exports.stream import export_card, export_card_markdown, export_prepare, export_stream
from labeling.services.exports.writers import parquet_schema

__all__ = [
    "AGGREGATIONS", "AGREEMENT_DEFINITION", "COLUMNS", "CONTENT_TYPES", "CSV_CELLS", "CSV_CELLS_RULE",
    "CSV_FORMULA_TRIGGERS", "DS_MAX_LABELS", "EXTENSIONS", "FIRST_BATCH_ROWS", "FIRST_FETCH", "FORMATS",
    "GOLD_MODES", "LABEL_SOURCES", "PARAMETERS", "PARQUET_ROW_GROUP", "PENDING_ADJUDICATION",
    "PROPAGATED_MODES", "RAW_ANSWER_FIELDS", "RAW_COLUMN", "READ_CHUNK", "ROUND", "SCHEMA_VERSION",
    "SNAPSHOT_STALE_AFTER",
    "TEXT_BATCH_ROWS", "TIE_RULE", "ExportParams", "ExportResult", "PreparedExport", "export_card",
    "export_card_markdown", "export_params_parse", "export_prepare", "export_snapshot_create",
    "export_snapshot_ensure", "export_snapshot_path", "export_snapshot_request", "export_snapshot_retry",
    "export_snapshot_run", "export_stream", "export_write_file", "parquet_schema",
]
