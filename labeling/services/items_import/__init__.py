"""Importing items from JSON Lines or CSV (either optionally gzipped), or Parquet: ``items_import``.

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

The package, along its one seam (``store`` imports ``parse``, never the reverse):

- ``parse``: bytes -> lines -> validated rows (JSON Lines, CSV; per-line errors) and ``ImportSummary``.
- ``parquet``: a Parquet file -> the same plain records, row group by row group (``parse`` validates them).
- ``store``: chunks -> the items table (COPY on PostgreSQL, read-ahead, retries) and ``items_import``.

Callers import from the package (``from labeling.services.items_import import items_import``).
"""

from __future__ import annotations

from labeling.services.items_import.parse import (
    FORMATS,
    GZIP_MAGIC,
    MAX_CSV_COLUMNS,
    MAX_ERROR_CHARS,
    MAX_EXTERNAL_ID_CHARS,
    MAX_REPORTED_ERRORS,
    READ_BYTES,
    UTF8_BOM,
    BinarySource,
    ImportSummary,
    item_content_hash,
)
from labeling.services.items_import.store import (
    ANALYZE_MIN_ROWS,
    ANALYZE_MIN_SHARE,
    CHUNK_ATTEMPTS,
    CHUNK_BYTES,
    CHUNK_ROWS,
    COPY_COLUMNS,
    READ_AHEAD_CHUNKS,
    items_import,
)

__all__ = [
    "ANALYZE_MIN_ROWS", "ANALYZE_MIN_SHARE", "CHUNK_ATTEMPTS", "CHUNK_BYTES", "CHUNK_ROWS", "COPY_COLUMNS",
    "FORMATS", "GZIP_MAGIC", "MAX_CSV_COLUMNS", "MAX_ERROR_CHARS", "MAX_EXTERNAL_ID_CHARS",
    "MAX_REPORTED_ERRORS", "READ_AHEAD_CHUNKS", "READ_BYTES", "UTF8_BOM", "BinarySource", "ImportSummary",
    "item_content_hash", "items_import",
]
