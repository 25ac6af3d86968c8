"""The store side of an import: chunks of validated rows -> the items table, and ``items_import`` itself.

Rows are chunked (``CHUNK_ROWS``/``CHUNK_BYTES``) and parsed ahead on a helper thread (``_read_ahead``); each
chunk reads the stored rows for its external ids once, refuses text changes under review (under the item's row
lock), and writes creates and updates by COPY on PostgreSQL or bulk_create/bulk_update elsewhere. One audit
event per import; the embedding request is flagged once the last chunk commits.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labeling.models import Item, Lease, Project
from labeling.services.audit import Actor, audit_record
from labeling.services.items_import.parse import (
    FORMATS,
    BinarySource,
    ImportSummary,
    _inexact,
    _Row,
    _rows,
    _Taxonomy,
    _Validator,
)
from labeling.services.languages import language_mix, recommended_embedder_for_mix
from learning.scheduling import request_embedding

CHUNK_ROWS = 2_000
# A chunk also flushes once its texts reach this size, so 2,000 long texts cannot pile up.
CHUNK_BYTES = 32 * 1024 * 1024
# Chunks parsed ahead of the one being written (memory: at most this many + 2 chunks).
READ_AHEAD_CHUNKS = 2
# Retries of one chunk when a concurrent import inserted the same external id first.
CHUNK_ATTEMPTS = 3
# An import that adds at least this many rows, and at least this share of the table, refreshes the items table's
# statistics at once (the rule autovacuum applies later, if it runs at all). See _refresh_statistics.
ANALYZE_MIN_ROWS = 1_000
ANALYZE_MIN_SHARE = 0.1
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


# Every column of a new item, in COPY order. tests/labeling/services/test_items_import.py checks this against
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
                 atomic: bool, progress: Callable[[ImportSummary], None] | None = None) -> None:
    chunks = _read_ahead(_chunked(rows))
    try:
        for chunk in chunks:
            summary.languages.update(row.language for row in chunk)
            # Atomic and already failed: keep classifying (to report every error), stop writing.
            _flush(project, chunk, summary, gold=gold, write=not (atomic and not summary.ok))
            if progress is not None:
                progress(summary)  # after the chunk's commit: what it reports is stored (import jobs' page)
    finally:
        chunks.close()  # stops the reader thread at once if a write failed


def items_import(*, actor: Actor, project: Project, source: BinarySource, filename: str = "",
                 file_format: str | None = None, gold: bool = False, atomic: bool = False,
                 progress: Callable[[ImportSummary], None] | None = None) -> ImportSummary:
    """Import items into ``project`` from ``source`` (a binary stream of JSON Lines or CSV, maybe gzipped).

    ``file_format`` is "jsonl" or "csv"; when None it comes from ``filename``'s extension, else from
    the content. Gzip is recognised by its magic bytes whatever the name. With ``gold`` each row's
    ``label`` is its expected answer. With ``atomic`` nothing is imported if any row is bad.
    Returns the summary; it never raises for bad rows. ``progress`` is called with the summary so far after each
    chunk (labeling/services/import_jobs.py shows it on the import page).
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
        _import_rows(project, rows, summary, gold=gold, atomic=False, progress=progress)
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
