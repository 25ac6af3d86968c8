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
three ordered reads; tests/labeling/test_export_roundtrip.py checks both give identical bytes.

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
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import BigIntegerField, Exists, F, Func, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from labeling.models import Adjudication, Annotation, ExportSnapshot, Item, Label, Project, TaxonomyVersion
from labeling.services import splits as splits_service
from labeling.services.aggregation import (
    DawidSkeneFit,
    dawid_skene,
    dawid_skene_multilabel,
    decide,
    majority_soft,
)
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, ServiceError, ValidationFailed

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                 "parquet": "application/vnd.apache.parquet"}
AGGREGATIONS = ("majority", "dawid_skene")
GOLD_MODES = ("flag", "exclude")
CSV_CELLS = ("escaped", "raw")
CSV_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
CSV_CELLS_RULE = (
    "csv_cells=escaped (the default): a cell that begins with =, +, -, @, a tab, a carriage return or an "
    "apostrophe gets one more apostrophe in front (OWASP's advice against CSV formula injection), so a spreadsheet "
    "shows it as text and never runs it; to read the true value, remove one leading apostrophe from any cell that "
    "starts with one. csv_cells=raw writes every cell verbatim: for programs, never for a spreadsheet."
)
"""How CSV cells are written (``csv_cells``); the dataset card and the README carry this text."""
COLUMNS: tuple[str, ...] = (
    "external_id", "text", "content_hash", "meta", "labels", "label_source", "soft_labels", "n_annotators",
    "agreement", "taxonomy_version", "annotation_taxonomy_versions", "n_mapped", "n_unmappable",
    "selection_reason", "inclusion_probability", "model_version", "is_gold", "gold_labels", "split",
)
RAW_COLUMN = "raw"
PENDING_ADJUDICATION = "P"
"""The adjudication key of an item whose adjudication is pending (never a JSON label list, which starts with '[')."""
AGREEMENT_DEFINITION = ("share of the row's n_annotators answers whose label set, read in the target taxonomy "
                        "version, equals the row's labels exactly; an answer that cannot be read in that version "
                        "counts as not agreeing; null when the row has no settled answer (pending adjudication) "
                        "or no readable answer")
LABEL_SOURCES: dict[str, str] = {
    "majority": "the majority vote of the readable answers",
    "dawid_skene": "the Dawid-Skene posterior's answer",
    "adjudication": "a policy lead's decision, which overrides any aggregate",
    "tie": "no hard label: the top answers tie (labels is empty)",
    "pending_adjudication": ("no hard label yet: the item waits for a policy lead's decision (labels is empty, "
                             "agreement is null, soft_labels still show the votes); drop these rows to train "
                             "only on settled answers"),
    "none": "no answer could be read in the target taxonomy version (labels is empty)",
}
"""Every ``label_source`` value and what it means (the dataset card carries this table)."""
RAW_ANSWER_FIELDS: dict[str, str] = {
    "reviewer": "the reviewer's username",
    "labels": "the labels as given, in the version they were given in",
    "mapped_labels": "the same answer mapped onto a later version by a label migration (null if none)",
    "taxonomy_version": "the version number the answer was given in",
    "model_version": "the ranking (model) version that selected the item",
    "created_at": "when the answer was submitted (UTC, ISO 8601)",
    "selection_reason": "why the item was shown to this reviewer",
    "lead_time_ms": "the time the reviewer spent on the item, in milliseconds (null if not reported)",
    "comment": "the reviewer's free-text comment, as typed (may be empty); plain text, never HTML",
}
"""The fields of each answer in the ``raw`` column (``raw=true``); the dataset card carries this table."""
TIE_RULE = ("single-label: a shared top vote share (or posterior) gives no hard label (label_source 'tie'); "
            "multi-label: a label needs strictly more than half (posterior > 0.5); a decided adjudication "
            "always wins")

READ_CHUNK = 5000
FIRST_FETCH = 50
TEXT_BATCH_ROWS = 500
FIRST_BATCH_ROWS = 20
PARQUET_ROW_GROUP = 20_000
DS_MAX_LABELS = 200
ROUND = 6
_SNAPSHOT_NAME_MAX = 100
_ERROR_MAX = 2000
# A running snapshot older than this lost its worker (task time limits are shorter): it may be claimed again.
SNAPSHOT_STALE_AFTER = timedelta(hours=6)

# Indices into the row tuples _groups hands out (the SELECT orders below). Rows are read raw (no
# Django converters): JSON columns arrive as text and are parsed through a small cache, because
# label lists repeat endlessly ('["spam"]') and ``meta`` is written out as the stored JSON text.
_I_ID, _I_EXTERNAL_ID, _I_TEXT, _I_HASH, _I_META, _I_GOLD, _I_GOLD_LABELS, _I_SPLIT = range(8)
(_A_ITEM, _A_ID, _A_REVIEWER, _A_VERSION, _A_LABELS, _A_MAPPED_VERSION, _A_MAPPED, _A_REASON, _A_INCLUSION,
 _A_MODEL, _A_LEAD_TIME, _A_COMMENT, _A_CREATED) = range(13)
_ITEM_FIELDS = ("id", "external_id", "text", "content_hash", "meta", "is_gold", "gold_labels", "split")
# Light passes (Dawid-Skene fit, split assignment) skip the text and meta.
_ITEM_FIELDS_LIGHT = ("id", "external_id", "content_hash", "is_gold", "gold_labels", "split")
# created_at comes last, as integer microseconds since the epoch (UTC): comparing and min/max-ing ints
# is cheap, and building a datetime per answer was a fifth of the export's time.
_ANNOTATION_FIELDS = ("item_id", "id", "reviewer_id", "taxonomy_version_id", "labels", "mapped_taxonomy_version_id",
                      "mapped_labels", "selection_reason", "inclusion_probability", "model_version", "lead_time_ms",
                      "comment")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_CACHE_MAX = 50_000
_MISSING = object()


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class ExportParams:
    """Everything that determines an export's bytes. ``as_dict`` is its canonical, stored form."""

    format: str = "jsonl"
    aggregation: str = "majority"
    split: tuple[float, float, float] | None = None
    seed: int = 0
    raw: bool = False
    gold: str = "flag"
    taxonomy_version: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    reviewers: tuple[str, ...] = ()
    min_agreement: float | None = None
    min_annotators: int | None = None
    labels: tuple[str, ...] = ()
    csv_cells: str = "escaped"

    @property
    def filters_annotations(self) -> bool:
        return bool(self.taxonomy_version is not None or self.since or self.until or self.reviewers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "aggregation": self.aggregation,
            "split": list(self.split) if self.split else None, "seed": self.seed, "raw": self.raw,
            "gold": self.gold, "taxonomy_version": self.taxonomy_version,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "reviewers": list(self.reviewers), "min_agreement": self.min_agreement,
            "min_annotators": self.min_annotators, "labels": list(self.labels),
            # Only where it changes bytes, so the stored parameters of JSON Lines and Parquet exports keep the
            # form they had before the option existed.
            **({"csv_cells": self.csv_cells} if self.format == "csv" else {}),
        }


def _one(name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise ValidationFailed(f"{name}: give one value", field=name)
        return value[0]
    return value


def _as_choice(choices: Sequence[str]) -> Any:
    def parse(name: str, value: Any) -> str:
        text = str(_one(name, value)).strip().lower()
        if text not in choices:
            raise ValidationFailed(f"{name}: {text!r} is not one of {', '.join(choices)}", field=name)
        return text
    return parse


def _as_int(name: str, value: Any) -> int:
    value = _one(name, value)
    if isinstance(value, bool):
        raise ValidationFailed(f"{name}: must be an integer", field=name)
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {value!r} is not an integer", field=name) from exc


def _as_float(name: str, value: Any) -> float:
    value = _one(name, value)
    try:
        number = float(str(value).strip())
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {value!r} is not a number", field=name) from exc
    if not np.isfinite(number):
        raise ValidationFailed(f"{name}: must be a finite number", field=name)
    return number


def _as_bool(name: str, value: Any) -> bool:
    value = _one(name, value)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValidationFailed(f"{name}: {value!r} is not true or false", field=name)


def _as_list(name: str, value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for v in values:
        if not isinstance(v, str | int):
            raise ValidationFailed(f"{name}: must be a string or a list of strings", field=name)
        out.extend(part.strip() for part in str(v).split(",") if part.strip())
    # Sorted and unique: the same filter in another order is the same export.
    return tuple(sorted(set(out)))


def _as_moment(name: str, value: Any, *, end: bool) -> datetime:
    """ISO date or datetime. A date means the whole day (``until`` a date includes that day); naive = UTC."""
    text = str(_one(name, value)).strip()
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text) if len(text) == 10 else None
        if day is None:
            raise ValidationFailed(f"{name}: {text!r} is not an ISO date or datetime", field=name)
        moment = datetime.combine(day + timedelta(days=1) if end else day, time.min)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# The allow-list: every parameter an export accepts, and how it is read. Nothing else gets through.
PARAMETERS: dict[str, Any] = {
    "format": _as_choice(FORMATS),
    "aggregation": _as_choice(AGGREGATIONS),
    "split": lambda name, v: splits_service.split_fractions_parse(_one(name, v)),
    "seed": _as_int,
    "raw": _as_bool,
    "gold": _as_choice(GOLD_MODES),
    "taxonomy_version": _as_int,
    "since": lambda name, v: _as_moment(name, v, end=False),
    "until": lambda name, v: _as_moment(name, v, end=True),
    "reviewer": _as_list,
    "min_agreement": _as_float,
    "min_annotators": _as_int,
    "label": _as_list,
    "csv_cells": _as_choice(CSV_CELLS),
}
_FIELD_OF = {"reviewer": "reviewers", "label": "labels"}


def export_params_parse(data: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> ExportParams:
    """Read export parameters from query strings, JSON or command options; unknown names are a 400."""
    unknown = sorted(k for k in data if k not in PARAMETERS and k not in ignore)
    if unknown:
        raise ValidationFailed(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(PARAMETERS)}",
                               field=unknown[0])
    values: dict[str, Any] = {}
    for name, parse in PARAMETERS.items():
        raw = data.get(name)
        if raw is None or raw == "" or raw == []:
            continue
        values[_FIELD_OF.get(name, name)] = parse(name, raw)
    params = ExportParams(**values)
    if params.min_agreement is not None and not 0.0 <= params.min_agreement <= 1.0:
        raise ValidationFailed("min_agreement: must be between 0 and 1", field="min_agreement")
    if params.min_annotators is not None and params.min_annotators < 0:
        raise ValidationFailed("min_annotators: must be 0 or more", field="min_annotators")
    if params.since and params.until and params.since >= params.until:
        raise ValidationFailed("since: must be before until", field="since")
    return params


# --------------------------------------------------------------------------- context

@dataclass
class _Stats:
    """Running figures for the dataset card, updated per row."""

    rows: int = 0
    annotations: int = 0
    gold_rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    agreement_sum: float = 0.0
    agreement_rows: int = 0
    full_agreement: int = 0
    mapped: int = 0
    unmappable: int = 0
    first: int | None = None  # microseconds since the epoch
    last: int | None = None


@dataclass
class PreparedExport:
    """A validated export, bound to a project and its target taxonomy version; stream it once."""

    project: Project
    params: ExportParams
    target_version_id: int
    target_version_number: int
    multi_label: bool
    keys: list[str]
    key_index: dict[str, int]
    version_numbers: dict[int, int]
    reviewer_ids: frozenset[int] | None
    label_filter: frozenset[str]
    split_assignment: dict[str, int] | None = None
    since_us: int = 0
    until_us: int = 0
    stats: _Stats = field(default_factory=_Stats)
    ds_info: dict[str, Any] | None = None
    finished: bool = False
    _usernames: dict[int, str] = field(default_factory=dict)
    # Per-export memo tables (bounded): JSON text -> value, label text -> vote, votes -> majority judgement.
    _json: dict[str, Any] = field(default_factory=dict)
    _votes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    _majority: dict[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], bool, tuple[float, ...], int]] = field(
        default_factory=dict)
    # Keyed by the per-item aggregate keys (see "per-item aggregates" below).
    _reads: dict[Any, Any] = field(default_factory=dict)
    _judgements: dict[Any, Any] = field(default_factory=dict)
    _versions: dict[Any, Any] = field(default_factory=dict)
    _lineages: dict[Any, Any] = field(default_factory=dict)
    _golds: dict[Any, Any] = field(default_factory=dict)

    def parse_json(self, text: Any) -> Any:
        """JSON column text -> value, memoised (label lists repeat); non-text passes through."""
        if not isinstance(text, str):
            return text
        value = self._json.get(text, _MISSING)
        if value is _MISSING:
            value = json.loads(text)
            if len(self._json) >= _JSON_CACHE_MAX:
                self._json.clear()
            self._json[text] = value
        return value

    def vote(self, text: Any) -> tuple[int, ...] | None:
        """Label-list text -> sorted label indices in the target version; None if unreadable there."""
        vote = self._votes.get(text, _MISSING) if isinstance(text, str) else _MISSING
        if vote is _MISSING:
            keys = self.parse_json(text)
            try:
                vote = tuple(sorted({self.key_index[k] for k in keys}))
            except (KeyError, TypeError):
                vote = None
            if isinstance(text, str):
                if len(self._votes) >= _JSON_CACHE_MAX:
                    self._votes.clear()
                self._votes[text] = vote
        return vote  # type: ignore[return-value]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*COLUMNS, RAW_COLUMN) if self.params.raw else COLUMNS

    def username(self, user_id: int) -> str:
        name = self._usernames.get(user_id)
        if name is None:
            # Reviewers are few; one lookup each, cached for the export.
            name = get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first() or ""
            self._usernames[user_id] = name
        return name


def export_prepare(*, project: Project, params: ExportParams, actor: Actor, audit: bool = True) -> PreparedExport:
    """Validate ``params`` against the project and assign splits if asked; nothing is streamed yet.

    Raises ValidationFailed (400) for an unknown taxonomy version, label or reviewer. With ``split``,
    newly exported items get their split here, in a short locked transaction (splits.py).
    """
    prepared = _bind(project=project, params=params)
    if params.split is not None:
        prepared.split_assignment = _assign_splits(prepared, actor=actor)
    if audit:
        audit_record(actor=actor, action="export.run", obj=project, project=project, data=params.as_dict())
    return prepared


def _bind(*, project: Project, params: ExportParams) -> PreparedExport:
    """The read-only half of ``export_prepare``: every check against the project, no writes."""
    versions: dict[int, int] = {
        vid: number or 0 for vid, number in TaxonomyVersion.objects.filter(
            project=project, status=TaxonomyVersion.Status.PUBLISHED).values_list("id", "number")}
    if params.taxonomy_version is not None:
        by_number = {number: vid for vid, number in versions.items()}
        if params.taxonomy_version not in by_number:
            raise ValidationFailed(f"taxonomy_version: this project has no published version {params.taxonomy_version}",
                                   field="taxonomy_version")
        target_id = by_number[params.taxonomy_version]
    else:
        if project.current_taxonomy_version_id is None:
            raise ValidationFailed("this project has no published taxonomy yet", field="taxonomy_version")
        target_id = project.current_taxonomy_version_id
    target = TaxonomyVersion.objects.get(pk=target_id)
    # Depth-first taxonomy order: labels are created parents-first in document order (services/taxonomy.py).
    keys = list(Label.objects.filter(version_id=target_id).order_by("id").values_list("key", flat=True))
    key_index = {key: i for i, key in enumerate(keys)}
    missing = [key for key in params.labels if key not in key_index]
    if missing:
        raise ValidationFailed(f"label: {', '.join(missing)} not in taxonomy version {target.number}", field="label")
    if params.aggregation == "dawid_skene" and len(keys) > DS_MAX_LABELS:
        raise ValidationFailed(f"aggregation: dawid_skene supports up to {DS_MAX_LABELS} labels; use majority",
                               field="aggregation")
    reviewer_ids: frozenset[int] | None = None
    if params.reviewers:
        found = dict(
            get_user_model().objects.filter(username__in=params.reviewers)
            .filter(Q(memberships__project=project) | Q(annotations__project=project))
            .values_list("username", "id").distinct()
        )
        unknown = [name for name in params.reviewers if name not in found]
        if unknown:
            raise ValidationFailed(f"reviewer: no reviewer of this project named {', '.join(unknown)}",
                                   field="reviewer")
        reviewer_ids = frozenset(found.values())
    return PreparedExport(
        project=project, params=params, target_version_id=target_id, target_version_number=target.number or 0,
        multi_label=target.multi_label, keys=keys, key_index=key_index, version_numbers=versions,
        reviewer_ids=reviewer_ids, label_filter=frozenset(params.labels),
        since_us=_micros(params.since) if params.since else 0, until_us=_micros(params.until) if params.until else 0,
    )


# --------------------------------------------------------------------------- reading

def _no_jit() -> None:
    """PostgreSQL only, for the rest of the transaction: no JIT compilation.

    The export's scans look expensive to the planner, and on a 50k-item project PostgreSQL spent
    4.8 s JIT-compiling the items query before its first row (EXPLAIN ANALYZE): a streamed read
    gains nothing from JIT and the download's first byte waited for it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")


@contextmanager
def _read_transaction() -> Iterator[None]:
    """One consistent snapshot on PostgreSQL; plain autocommit reads on SQLite.

    SQLite transactions here are IMMEDIATE (they take the write lock), so wrapping a long read in one
    would stall every reviewer's submit for the length of the download.
    """
    if connection.vendor != "postgresql":
        yield
        return
    if connection.in_atomic_block:
        with transaction.atomic():
            _no_jit()
            yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        _no_jit()
        yield


def _annotation_filter(prepared: PreparedExport) -> Q:
    params = prepared.params
    q = Q()
    if params.taxonomy_version is not None:
        q &= Q(taxonomy_version_id=prepared.target_version_id)
    if prepared.reviewer_ids is not None:
        q &= Q(reviewer_id__in=sorted(prepared.reviewer_ids))
    if params.since:
        q &= Q(created_at__gte=params.since)
    if params.until:
        q &= Q(created_at__lt=params.until)
    return q


def _fetch(sql: str, params: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """The query's rows straight from the driver, as lists of tuples: ``FIRST_FETCH`` rows, then ``READ_CHUNK``.

    A server-side cursor on PostgreSQL (Django's ``chunked_cursor``); chunked fetches on SQLite.
    Skipping Django's per-value converters is much of the export's speed, and the small first fetch
    lets a download start before thousands of rows have been read.
    """
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        size = FIRST_FETCH
        while True:
            rows = cursor.fetchmany(size)
            size = READ_CHUNK
            if not rows:
                return
            yield rows
    finally:
        cursor.close()


def _raw_rows(queryset: QuerySet[Any], *, sqlite_datetime_at: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The queryset's rows, one by one (see ``_fetch``); SQLite's text datetimes become microseconds."""
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    for rows in _fetch(sql, params):
        if sqlite_datetime_at is None:
            yield from rows
        else:
            at = sqlite_datetime_at
            for row in rows:
                yield (*row[:at], _sqlite_datetime(row[at]), *row[at + 1:])


class _EpochMicros(Func):
    """PostgreSQL: a timestamptz as integer microseconds since the epoch (exact: EXTRACT is numeric)."""

    template = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"
    output_field = BigIntegerField()


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _sqlite_datetime(value: Any) -> int:
    """SQLite keeps datetimes as text (naive UTC); the same integer microseconds as on PostgreSQL."""
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    if moment is None:
        raise ValueError(f"unreadable datetime {value!r}")
    return _micros(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _text(value: Any) -> str:
    """A JSON column's value as JSON text (the driver gives text; anything else is encoded)."""
    return value if isinstance(value, str) else _json(value)


# --------------------------------------------------------------------------- per-item aggregates
#
# Both producers below hand out the same thing: lists of per-item tuples (``_G_*`` positions), one
# per candidate item, by item id. The answers of an item arrive pre-aggregated as *keys*: ``votes``
# joins one token per filtered answer ("L" + labels JSON when given in the target version, "M" +
# mapped labels JSON when mapped onto it, "U" when unreadable there) with U+001F, which JSON text
# never contains unescaped; ``versions`` lists the versions the answers were given in; ``lineage``
# is the item's first answer's (reason, inclusion probability, model version). Keys repeat across
# items ('L["spam"]\x1fL["spam"]'), so each is read once per export through a memo table and every
# later item with the same key costs one dict lookup: that is what keeps the row loop short.

(_G_ID, _G_EXTERNAL_ID, _G_TEXT, _G_HASH, _G_META, _G_GOLD, _G_GOLD_LABELS, _G_SPLIT, _G_N, _G_VOTES, _G_REVIEWERS,
 _G_VERSIONS, _G_LINEAGE, _G_FIRST, _G_LAST, _G_ADJ, _G_RAW) = range(17)
_SEP = "\x1f"


def _sql_aggregates(prepared: PreparedExport, *, light: bool, reviewers: bool) -> tuple[str, list[Any]]:
    """PostgreSQL: one query that aggregates every item's answers (GROUP BY item) and joins the item.

    The aggregate runs over the annotation index in item order and merge-joins the items by primary
    key, so the first rows stream out at once; Python receives one tuple per item instead of one per
    answer. ``light`` (the Dawid-Skene fit and split assignment) skips text and meta; ``reviewers``
    (the fit) adds the reviewers, with votes and reviewers both in answer-id order, so that each vote
    pairs with its reviewer and the fit sees its observations in the same order every time.
    """
    target = prepared.target_version_id
    params = prepared.params
    conditions: list[str] = []
    pass_params: list[Any] = []
    if params.taxonomy_version is not None:
        conditions.append("taxonomy_version_id = %s")
        pass_params.append(target)
    if prepared.reviewer_ids is not None:
        conditions.append("reviewer_id = ANY(%s)")
        pass_params.append(sorted(prepared.reviewer_ids))
    if params.since is not None:
        conditions.append("created_at >= %s")
        pass_params.append(params.since)
    if params.until is not None:
        conditions.append("created_at < %s")
        pass_params.append(params.until)
    filtered = bool(conditions)
    only = " FILTER (WHERE passes)" if filtered else ""
    ordered = " ORDER BY id" if reviewers else ""
    reviewer_list = f"string_agg(reviewer_id::text, ','{ordered}){only}" if reviewers else "NULL"
    text, meta = ("''", "'{}'") if light else ("i.text", "i.meta::text")
    sql = f"""
        SELECT i.id, i.external_id, {text}, i.content_hash, {meta}, i.is_gold, i.gold_labels::text, i.split,
               COALESCE(a.n, 0), a.votes, a.reviewers, a.versions, a.lineage, a.first_us, a.last_us,
               CASE WHEN d.state = %s THEN %s
                    WHEN d.taxonomy_version_id IS NULL OR d.taxonomy_version_id = %s THEN d.labels::text END
        FROM {Item._meta.db_table} i
        {"" if filtered else "LEFT "}JOIN (
            SELECT item_id,
                   count(*){only} AS n,
                   string_agg(token, chr(31){ordered}){only} AS votes,
                   {reviewer_list} AS reviewers,
                   string_agg(taxonomy_version_id::text, ','){only} AS versions,
                   (array_agg(concat(selection_reason, chr(31), inclusion_probability, chr(31), model_version)
                              ORDER BY id))[1] AS lineage,
                   (EXTRACT(EPOCH FROM min(created_at){only}) * 1000000)::bigint AS first_us,
                   (EXTRACT(EPOCH FROM max(created_at){only}) * 1000000)::bigint AS last_us
            FROM (
                SELECT item_id, id, reviewer_id, taxonomy_version_id, selection_reason, inclusion_probability,
                       model_version, created_at, {" AND ".join(conditions) or "TRUE"} AS passes,
                       CASE WHEN taxonomy_version_id = %s THEN 'L' || labels::text
                            WHEN mapped_taxonomy_version_id = %s AND mapped_labels IS NOT NULL
                                THEN 'M' || mapped_labels::text
                            ELSE 'U' END AS token
                FROM {Annotation._meta.db_table}
                WHERE project_id = %s
            ) answers
            GROUP BY item_id
        ) a ON a.item_id = i.id
        LEFT JOIN {Adjudication._meta.db_table} d ON d.item_id = i.id AND d.state IN (%s, %s)
        WHERE i.project_id = %s AND {"a.n > 0" if filtered else "(a.item_id IS NOT NULL OR d.state = %s)"}
        ORDER BY i.id
    """  # noqa: S608 - only this module's constant fragments are interpolated; every value is a parameter
    project_id = prepared.project.pk
    pending, decided = Adjudication.State.PENDING, Adjudication.State.DECIDED
    return sql, [pending, PENDING_ADJUDICATION, target, *pass_params, target, target, project_id, pending, decided,
                 project_id, *([] if filtered else [decided])]


def _passes(prepared: PreparedExport, ann: tuple[Any, ...]) -> bool:
    params = prepared.params
    if params.taxonomy_version is not None and ann[_A_VERSION] != prepared.target_version_id:
        return False
    if prepared.reviewer_ids is not None and ann[_A_REVIEWER] not in prepared.reviewer_ids:
        return False
    if params.since is not None and ann[_A_CREATED] < prepared.since_us:
        return False
    return not (params.until is not None and ann[_A_CREATED] >= prepared.until_us)


def _groups(prepared: PreparedExport, *, light: bool) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]],
                                                                           tuple[Any, ...] | None]]:
    """(item, its annotations by id, its decided adjudication) for every candidate item, by item id.

    Three ordered reads merge-joined on item id, so an item's text is read once.
    """
    project_id = prepared.project.pk
    in_project = Annotation.objects.filter(project_id=project_id, item=OuterRef("pk"))
    items = Item.objects.filter(project_id=project_id)
    if prepared.params.filters_annotations:
        items = items.filter(Exists(in_project.filter(_annotation_filter(prepared))))
    else:
        decided = Adjudication.objects.filter(project_id=project_id, item=OuterRef("pk"),
                                              state=Adjudication.State.DECIDED)
        items = items.filter(Exists(in_project) | Exists(decided))
    annotations = Annotation.objects.filter(project_id=project_id)
    if prepared.params.filters_annotations:
        annotations = annotations.filter(item__in=items.values("id"))
    sqlite = connection.vendor == "sqlite"
    item_rows = _raw_rows(items.order_by("id").values_list(*(_ITEM_FIELDS_LIGHT if light else _ITEM_FIELDS)))
    created: Any = "created_at" if sqlite else _EpochMicros("created_at")
    ann_rows = _raw_rows(annotations.order_by("item_id", "id").values_list(*_ANNOTATION_FIELDS, created),
                         sqlite_datetime_at=_A_CREATED if sqlite else None)
    adj_rows = _raw_rows(Adjudication.objects.filter(project_id=project_id)
                         .order_by("item_id").values_list("item_id", "labels", "taxonomy_version_id", "state"))
    next_ann = next(ann_rows, None)
    next_adj = next(adj_rows, None)
    for item in item_rows:
        if light:
            item = (item[0], item[1], "", item[2], "{}", item[3], item[4], item[5])
        item_id = item[_I_ID]
        while next_ann is not None and next_ann[_A_ITEM] < item_id:
            next_ann = next(ann_rows, None)
        anns: list[tuple[Any, ...]] = []
        while next_ann is not None and next_ann[_A_ITEM] == item_id:
            anns.append(next_ann)
            next_ann = next(ann_rows, None)
        while next_adj is not None and next_adj[0] < item_id:
            next_adj = next(adj_rows, None)
        adj = next_adj if next_adj is not None and next_adj[0] == item_id else None
        yield item, anns, adj


def _python_aggregates(prepared: PreparedExport, *, light: bool) -> Iterator[list[tuple[Any, ...]]]:
    """The same per-item tuples as ``_sql_aggregates``, built in Python from ``_groups``.

    Used on SQLite and for ``raw`` (each annotator's answers, with usernames and ISO timestamps).
    """
    target = prepared.target_version_id
    filtered = prepared.params.filters_annotations
    raw = prepared.params.raw and not light
    versions = prepared.version_numbers
    batch: list[tuple[Any, ...]] = []
    size = FIRST_FETCH
    for item, anns, adj in _groups(prepared, light=light):
        passing = [a for a in anns if _passes(prepared, a)] if filtered else anns
        if filtered and not passing:
            continue
        tokens = []
        for a in passing:
            if a[_A_VERSION] == target:
                tokens.append("L" + _text(a[_A_LABELS]))
            elif a[_A_MAPPED_VERSION] == target and a[_A_MAPPED] is not None:
                tokens.append("M" + _text(a[_A_MAPPED]))
            else:
                tokens.append("U")
        first = anns[0] if anns else None
        if adj is not None and adj[3] == Adjudication.State.PENDING:
            adj_text: str | None = PENDING_ADJUDICATION
        elif (adj is not None and adj[3] == Adjudication.State.DECIDED and adj[1] is not None
              and adj[2] in (None, target)):
            adj_text = _text(adj[1])
        else:
            adj_text = None
        raw_answers = [
            {"reviewer": prepared.username(a[_A_REVIEWER]), "labels": prepared.parse_json(a[_A_LABELS]),
             "mapped_labels": prepared.parse_json(a[_A_MAPPED]),
             "taxonomy_version": versions.get(a[_A_VERSION], 0), "model_version": a[_A_MODEL],
             "created_at": _iso(a[_A_CREATED]), "selection_reason": a[_A_REASON], "lead_time_ms": a[_A_LEAD_TIME],
             "comment": a[_A_COMMENT]}
            for a in passing
        ] if raw else None
        batch.append((
            *item, len(passing), _SEP.join(tokens) if passing else None,
            tuple(a[_A_REVIEWER] for a in passing), tuple(a[_A_VERSION] for a in passing),
            (first[_A_REASON], first[_A_INCLUSION], first[_A_MODEL]) if first else None,
            min(a[_A_CREATED] for a in passing) if passing else None,
            max(a[_A_CREATED] for a in passing) if passing else None,
            adj_text, raw_answers,
        ))
        if len(batch) >= size:
            yield batch
            batch, size = [], READ_CHUNK
    if batch:
        yield batch


def _aggregates(prepared: PreparedExport, *, light: bool, reviewers: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    if connection.vendor == "postgresql" and not (prepared.params.raw and not light):
        sql, sql_params = _sql_aggregates(prepared, light=light, reviewers=reviewers)
        return _fetch(sql, sql_params)
    return _python_aggregates(prepared, light=light)


# --------------------------------------------------------------------------- judging

@dataclass(slots=True)
class _Read:
    """A votes key read in the target version."""

    n: int  # filtered answers
    votes: list[tuple[int, ...]]  # the readable ones, as sorted label indices
    positions: list[int]  # where each readable vote sits among the key's tokens
    n_mapped: int
    n_unmappable: int


@dataclass(slots=True, eq=False)
class _Judgement:
    """An item's answer (the aggregate, or its adjudication) and the row figures that follow from it.

    Shared by every item with the same votes key and adjudication under majority vote (eq=False:
    batches count and cache these by identity). ``json`` and ``csv`` are the writers' rendered
    fragments, filled on first use.
    """

    labels: tuple[str, ...]
    source: str
    soft: tuple[float, ...] | None
    agreement: float | None
    n_annotators: int
    n_mapped: int
    n_unmappable: int
    keep: bool
    json: tuple[str, str] | None = None
    csv: tuple[tuple[str, ...], tuple[str, ...]] | None = None


@dataclass(slots=True, eq=False)
class _Versions:
    """The versions an item's answers were given in (by number) and how many answers each."""

    numbers: list[int]
    counts: Counter[int]
    json: str | None = None


@dataclass(slots=True, eq=False)
class _Lineage:
    reason: str | None
    inclusion: float | None
    model: int | None
    json: str | None = None
    csv: tuple[str, str, str] | None = None


@dataclass(slots=True, eq=False)
class _Gold:
    gold: bool
    labels: Any
    json: str | None = None
    csv: tuple[str, str] | None = None


def _memo(table: dict[Any, Any], key: Any, make: Any) -> Any:
    value = table.get(key)
    if value is None:
        value = make(key)
        if len(table) >= _JSON_CACHE_MAX:
            table.clear()
        table[key] = value
    return value


def _read(prepared: PreparedExport, key: str | None) -> _Read:
    def make(key: str | None) -> _Read:
        read = _Read(0, [], [], 0, 0)
        if key is None:
            return read
        for position, token in enumerate(key.split(_SEP)):
            read.n += 1
            vote = prepared.vote(token[1:]) if token[0] != "U" else None
            if vote is None:
                read.n_unmappable += 1
                continue
            read.n_mapped += token[0] == "M"
            read.votes.append(vote)
            read.positions.append(position)
        return read

    return _memo(prepared._reads, key, make)  # type: ignore[no-any-return]


def _majority(prepared: PreparedExport, votes: list[tuple[int, ...]]
              ) -> tuple[tuple[int, ...], bool, tuple[float, ...], int]:
    """(labels, tie, rounded soft scores, votes equal to labels) for a multiset of votes; memoised per export."""
    key = tuple(sorted(votes))
    hit = prepared._majority.get(key)
    if hit is None:
        soft = majority_soft(votes, len(prepared.keys))
        decision = decide(soft, multi_label=prepared.multi_label)
        matches = sum(1 for v in votes if v == decision.labels)
        hit = (decision.labels, decision.tie, tuple(round(x, ROUND) for x in soft), matches)
        if len(prepared._majority) >= _JSON_CACHE_MAX:
            prepared._majority.clear()
        prepared._majority[key] = hit
    return hit


def _agreement(votes: list[tuple[int, ...]], chosen: tuple[int, ...], n_annotators: int) -> float:
    """Share of ALL ``n_annotators`` filtered answers that equal ``chosen``: an answer that cannot be read in the
    target version (n_unmappable) counts as not agreeing, so agreement, n_annotators and the votes behind
    ``labels`` are always about the same answers (issue 14: 1 readable of 2 answers once exported as 1.0)."""
    return round(sum(1 for v in votes if v == chosen) / n_annotators, ROUND)


def _judge(prepared: PreparedExport, key: str | None, adj_text: str | None,
           posterior: Sequence[float] | np.ndarray | None) -> _Judgement:
    """Decide one item from its votes key, its (applicable) adjudication and, for Dawid-Skene, its posterior."""
    read = _read(prepared, key)
    votes = read.votes
    soft: tuple[float, ...] | None = None
    chosen: tuple[int, ...] = ()
    source = "none"
    agreement: float | None = None
    if votes:
        if posterior is not None:
            raw_soft = [float(p) for p in posterior]
            decision = decide(raw_soft, multi_label=prepared.multi_label)
            chosen, tie = decision.labels, decision.tie
            soft = tuple(round(x, ROUND) for x in raw_soft)
            source = "dawid_skene"
            agreement = _agreement(votes, chosen, read.n)
        else:
            chosen, tie, soft, matches = _majority(prepared, votes)
            agreement = round(matches / read.n, ROUND)
            source = "majority"
        if tie:
            source = "tie"
    if adj_text == PENDING_ADJUDICATION:
        # A lead has been asked to decide: no hard label and no agreement until they have (soft_labels still
        # show the votes). Reporting the aggregate here would claim a consensus the project itself disputes.
        if read.n:
            chosen, source, agreement = (), "pending_adjudication", None
        decided = None
    else:
        decided = prepared.vote(adj_text) if adj_text is not None else None
    if decided is not None:
        chosen = decided
        source = "adjudication"
        if votes:
            agreement = _agreement(votes, chosen, read.n)
    labels = tuple(prepared.keys[k] for k in chosen)
    params = prepared.params
    # The row filters that depend on the answer alone (gold exclusion is the item's own).
    keep = not (
        (not read.n and (params.filters_annotations or source != "adjudication"))
        or (params.min_annotators is not None and read.n < params.min_annotators)
        or (params.min_agreement is not None and (agreement is None or agreement < params.min_agreement))
        or (prepared.label_filter and not prepared.label_filter.intersection(labels))
    )
    return _Judgement(labels, source, soft, agreement, read.n, read.n_mapped, read.n_unmappable, keep)


def _versions_of(prepared: PreparedExport, key: Any) -> _Versions:
    def make(key: Any) -> _Versions:
        ids = [int(v) for v in key.split(",")] if isinstance(key, str) else list(key or ())
        counts = Counter(prepared.version_numbers.get(v, 0) for v in ids)
        return _Versions(sorted(counts), counts)

    return _memo(prepared._versions, key, make)  # type: ignore[no-any-return]


def _lineage_of(prepared: PreparedExport, key: Any) -> _Lineage:
    def make(key: Any) -> _Lineage:
        if key is None:
            return _Lineage(None, None, None)
        if isinstance(key, str):
            # concat() in SQL: NULLs are empty strings; floats are PostgreSQL's shortest exact text.
            reason, inclusion, model = key.rsplit(_SEP, 2)
            return _Lineage(reason, float(inclusion) if inclusion else None, int(model) if model else None)
        return _Lineage(*key)

    return _memo(prepared._lineages, key, make)  # type: ignore[no-any-return]


def _gold_of(prepared: PreparedExport, is_gold: Any, labels: Any) -> _Gold:
    return _memo(prepared._golds, (bool(is_gold), labels),  # type: ignore[no-any-return]
                 lambda key: _Gold(key[0], prepared.parse_json(key[1]) if key[0] else None))


@dataclass(slots=True)
class _Batch:
    """Kept rows (``_G_*`` tuples) and, position by position, what the writers need about each."""

    rows: list[tuple[Any, ...]]
    judgements: list[_Judgement]
    versions: list[_Versions] = field(default_factory=list)
    lineages: list[_Lineage] = field(default_factory=list)
    golds: list[_Gold] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def part(self, start: int, stop: int) -> _Batch:
        return _Batch(self.rows[start:stop], self.judgements[start:stop], self.versions[start:stop],
                      self.lineages[start:stop], self.golds[start:stop])

    @staticmethod
    def join(batches: list[_Batch]) -> _Batch:
        if len(batches) == 1:
            return batches[0]
        out = _Batch([], [])
        for b in batches:
            out.rows += b.rows
            out.judgements += b.judgements
            out.versions += b.versions
            out.lineages += b.lineages
            out.golds += b.golds
        return out


def _judged(prepared: PreparedExport, *, light: bool) -> Iterator[_Batch]:
    """The exported items in id order, judged, in batches (``versions``/``lineages``/``golds`` unless light)."""
    posteriors = _fit_dawid_skene(prepared) if prepared.params.aggregation == "dawid_skene" else None
    exclude_gold = prepared.params.gold == "exclude"
    memo = prepared._judgements
    for chunk in _aggregates(prepared, light=light):
        rows: list[tuple[Any, ...]] = []
        judgements: list[_Judgement] = []
        for row in chunk:
            if exclude_gold and row[_G_GOLD]:
                continue
            post = posteriors.row(row[_G_ID]) if posteriors is not None else None
            # Items with the same answers (and, for Dawid-Skene, the same posterior: the same
            # reviewers gave them) share one judgement.
            key = (row[_G_VOTES], row[_G_ADJ]) if post is None else (row[_G_VOTES], row[_G_ADJ], post.tobytes())
            judgement = memo.get(key)
            if judgement is None:
                judgement = _judge(prepared, row[_G_VOTES], row[_G_ADJ], post)
                if len(memo) >= _JSON_CACHE_MAX:
                    memo.clear()
                memo[key] = judgement
            if judgement.keep:
                rows.append(row)
                judgements.append(judgement)
        if not rows:
            continue
        batch = _Batch(rows, judgements)
        if not light:
            versions, lineages, golds = prepared._versions, prepared._lineages, prepared._golds
            batch.versions = [versions.get(r[_G_VERSIONS]) or _versions_of(prepared, r[_G_VERSIONS]) for r in rows]
            batch.lineages = [lineages.get(r[_G_LINEAGE]) or _lineage_of(prepared, r[_G_LINEAGE]) for r in rows]
            batch.golds = [golds.get((bool(r[_G_GOLD]), r[_G_GOLD_LABELS]))
                           or _gold_of(prepared, r[_G_GOLD], r[_G_GOLD_LABELS]) for r in rows]
        yield batch


def _tally(stats: _Stats, batch: _Batch) -> None:
    """The card figures for a written batch: per distinct judgement / version set, not per row."""
    stats.rows += len(batch.rows)
    for judgement, count in Counter(batch.judgements).items():
        stats.annotations += judgement.n_annotators * count
        if judgement.labels:
            for label in judgement.labels:
                stats.labels[label] += count
        else:
            stats.labels["(no label)"] += count
        stats.sources[judgement.source] += count
        stats.mapped += judgement.n_mapped * count
        stats.unmappable += judgement.n_unmappable * count
        if judgement.agreement is not None:
            stats.agreement_rows += count
            stats.agreement_sum += judgement.agreement * count
            stats.full_agreement += count if judgement.agreement == 1.0 else 0
    for versions, count in Counter(batch.versions).items():
        for number, n in versions.counts.items():
            stats.versions[number] += n * count
    stats.gold_rows += sum(1 for g in batch.golds if g.gold)
    stats.splits.update(r[_G_SPLIT] or "unassigned" for r in batch.rows)
    firsts = [r[_G_FIRST] for r in batch.rows if r[_G_FIRST] is not None]
    if firsts:
        low, high = min(firsts), max(r[_G_LAST] for r in batch.rows if r[_G_LAST] is not None)
        stats.first = low if stats.first is None else min(stats.first, low)
        stats.last = high if stats.last is None else max(stats.last, high)


# --------------------------------------------------------------------------- Dawid-Skene

@dataclass
class _Posteriors:
    """Posterior rows keyed by item id (ids ascending), read with a forward-only cursor."""

    item_ids: np.ndarray
    matrix: np.ndarray
    position: int = 0

    def row(self, item_id: int) -> np.ndarray | None:
        ids = self.item_ids
        while self.position < len(ids) and ids[self.position] < item_id:
            self.position += 1
        if self.position < len(ids) and ids[self.position] == item_id:
            return self.matrix[self.position]  # type: ignore[no-any-return]
        return None


def _fit_dawid_skene(prepared: PreparedExport) -> _Posteriors:
    """Read every filtered answer as integers, then fit (aggregation.py). Gold answers are pinned."""
    item_ids = array("q")
    obs_item, obs_worker, obs_label = array("i"), array("i"), array("i")  # single-label observations
    ans_item, ans_worker = array("i"), array("i")  # multi-label: one per answer...
    chosen_answer, chosen_label = array("i"), array("i")  # ...and one per chosen label
    workers: dict[Any, int] = {}
    gold: list[list[int] | None] = []
    used_labels: set[int] = set()
    multi = prepared.multi_label
    for chunk in _aggregates(prepared, light=True, reviewers=True):
        for row in chunk:
            # Gold items inform the fit even when the export leaves them out.
            read = _read(prepared, row[_G_VOTES])
            if not read.votes:
                continue
            reviewers = row[_G_REVIEWERS]
            if isinstance(reviewers, str):
                reviewers = reviewers.split(",")
            pos = len(item_ids)
            item_ids.append(row[_G_ID])
            for vote, at in zip(read.votes, read.positions, strict=True):
                w = workers.setdefault(int(reviewers[at]), len(workers))
                if multi:
                    ans_item.append(pos)
                    ans_worker.append(w)
                    for k in vote:
                        chosen_answer.append(len(ans_item) - 1)
                        chosen_label.append(k)
                else:
                    for k in vote:
                        obs_item.append(pos)
                        obs_worker.append(w)
                        obs_label.append(k)
                used_labels.update(vote)
            pinned = prepared.vote(row[_G_GOLD_LABELS]) if row[_G_GOLD] and row[_G_GOLD_LABELS] else None
            gold.append(list(pinned) if pinned else None)
    n_items, n_labels = len(item_ids), len(prepared.keys)
    ids = np.frombuffer(item_ids, dtype=np.int64).copy() if n_items else np.zeros(0, dtype=np.int64)
    fit: DawidSkeneFit
    if multi:
        fit = dawid_skene_multilabel(
            answer_item=np.frombuffer(ans_item, dtype=np.int32),
            answer_worker=np.frombuffer(ans_worker, dtype=np.int32),
            chosen_answer=np.frombuffer(chosen_answer, dtype=np.int32),
            chosen_label=np.frombuffer(chosen_label, dtype=np.int32),
            n_items=n_items, n_workers=len(workers), n_labels=n_labels, gold=gold)
        matrix = fit.posteriors
    else:
        # Fit over the labels actually used (K^2 per reviewer), then widen back to every key.
        used = sorted(used_labels | {k for g in gold if g for k in g})
        compact = {k: i for i, k in enumerate(used)}
        remap = np.array([compact.get(k, 0) for k in range(n_labels)], dtype=np.int64)
        fit = dawid_skene(
            item=np.frombuffer(obs_item, dtype=np.int32), worker=np.frombuffer(obs_worker, dtype=np.int32),
            label=remap[np.frombuffer(obs_label, dtype=np.int32)] if len(obs_label) else np.zeros(0, np.int64),
            n_items=n_items, n_workers=len(workers), n_labels=max(len(used), 1),
            gold=[[compact[k] for k in g] if g else None for g in gold])
        matrix = np.zeros((n_items, n_labels))
        if used:
            matrix[:, used] = fit.posteriors
    prepared.ds_info = {"iterations": fit.n_iter, "converged": fit.converged, "items": n_items,
                        "reviewers": len(workers), "gold_pinned": sum(1 for g in gold if g is not None)}
    return _Posteriors(ids, matrix)


# --------------------------------------------------------------------------- splits

def _assign_splits(prepared: PreparedExport, *, actor: Actor) -> dict[str, int]:
    """Give every exported item without a split one (splits.py), in one locked transaction."""
    params = prepared.params
    assert params.split is not None
    with transaction.atomic():
        splits_service.splits_lock(project_id=prepared.project.pk)
        _no_jit()
        # Compact per exported item: id (8 bytes), content digest (32), stratum (4), stored split (1).
        item_ids = array("q")
        hashes = bytearray()
        strata = array("i")
        existing = array("b")
        stratum_index: dict[str, int] = {}
        for batch in _judged(prepared, light=True):
            for row, judgement in zip(batch.rows, batch.judgements, strict=True):
                item_ids.append(row[_G_ID])
                hashes += _hash_bytes(row[_G_HASH])
                strata.append(stratum_index.setdefault("+".join(judgement.labels), len(stratum_index)))
                existing.append(splits_service.SPLIT_INDEX.get(row[_G_SPLIT] or "", splits_service.NO_SPLIT))
        if not item_ids:
            return {"train": 0, "validation": 0, "test": 0}
        ids = np.frombuffer(item_ids, dtype=np.int64)
        stored = np.frombuffer(existing, dtype=np.int8)
        digests, group = np.unique(np.frombuffer(bytes(hashes), dtype="S32"), return_inverse=True)
        del hashes
        # Groups with no stored split here: look for one held elsewhere in the project, and key them by u.
        open_groups = np.flatnonzero(np.bincount(group[stored >= 0], minlength=len(digests)) == 0)
        held = splits_service.splits_inherited(project_id=prepared.project.pk,
                                               content_hashes=(bytes(digests[g]).hex() for g in open_groups))
        inherited = np.full(len(digests), splits_service.NO_SPLIT, dtype=np.int8)
        u = np.zeros(len(digests))
        for g in open_groups.tolist():
            content_hash = bytes(digests[g]).hex()
            inherited[g] = held.get(content_hash, splits_service.NO_SPLIT)
            u[g] = splits_service.uniform_key(params.seed, content_hash)
        result = splits_service.splits_assign(stratum=np.frombuffer(strata, dtype=np.int32), group=group,
                                              existing=stored, group_u=u, group_inherited=inherited,
                                              fractions=params.split)
        new = stored < 0
        written = splits_service.splits_persist(project_id=prepared.project.pk, item_ids=ids[new], splits=result[new])
        if any(written.values()):
            audit_record(actor=actor, action="export.splits_assign", obj=prepared.project, project=prepared.project,
                         data={"assigned": written, "fractions": list(params.split), "seed": params.seed})
        return written


def _hash_bytes(content_hash: str) -> bytes:
    """32 bytes per item instead of a 64-character str; a malformed hash still groups by its own text."""
    try:
        raw = bytes.fromhex(content_hash)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raw = hashlib.sha256(str(content_hash).encode()).digest()
    return raw


def _iso(moment: datetime | int) -> str:
    if isinstance(moment, int):
        moment = _from_micros(moment)
    return moment.astimezone(UTC).isoformat()


# --------------------------------------------------------------------------- writers
#
# Writers turn a _Batch into bytes. The parts of a row that come from shared objects (judgement,
# version set, lineage, gold) are rendered once per object and spliced in; only the item's own
# strings (external id, text, hash, meta) are encoded per row. The output is exactly what encoding
# each row as a dict in column order would give (tests/labeling/test_export_roundtrip.py).

# One encoder for the whole module: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_encode_string = encode_basestring  # the C encoder json uses for str with ensure_ascii=False


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


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
            extra = f',"raw":{_json(row[_G_RAW])}' if raw else ""
            lines.append(
                f'{{"external_id":{enc(row[_G_EXTERNAL_ID])},"text":{enc(row[_G_TEXT])},'
                f'"content_hash":{enc(row[_G_HASH])},"meta":{row[_G_META] or "{}"},{head}{version}'
                f'{versions.json or _versions_json(versions)}{counts}{lineage.json or _lineage_json(lineage)}'
                f'{gold.json or _gold_json(gold)},"split":{split_json}{extra}}}\n')
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
                          row[_G_SPLIT] or "", *((_json(row[_G_RAW]),) if raw else ())))
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


def export_stream(prepared: PreparedExport) -> Iterator[bytes]:
    """The export's bytes, in chunks; the card figures are complete once it is exhausted.

    Text formats send each batch as it is read (the first is ``FIRST_FETCH`` items, so a download
    starts at once); Parquet writes row groups of ``PARQUET_ROW_GROUP`` rows.
    """
    if prepared.finished:
        raise RuntimeError("a prepared export streams once")
    with _read_transaction():
        writer = _WRITERS[prepared.params.format](prepared)
        head = writer.begin()
        if head:
            yield head
        batches = _judged(prepared, light=False)
        if prepared.params.format == "parquet":
            batches = _regroup(batches, PARQUET_ROW_GROUP)
        for batch in batches:
            _tally(prepared.stats, batch)
            yield writer.write(batch)
        tail = writer.finish()
        if tail:
            yield tail
    prepared.finished = True


# --------------------------------------------------------------------------- cards

def export_card(prepared: PreparedExport, *, sha256: str | None = None, size_bytes: int | None = None,
                name: str | None = None) -> dict[str, Any]:
    """The dataset card as JSON-ready data (render it with ``export_card_markdown``)."""
    if not prepared.finished:
        raise RuntimeError("the card needs the export to have been streamed to the end")
    stats = prepared.stats
    distribution = {key: stats.labels[key] for key in prepared.keys if stats.labels[key]}
    if stats.labels["(no label)"]:
        distribution["(no label)"] = stats.labels["(no label)"]
    card: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "project": prepared.project.slug,
        "name": name,
        "format": prepared.params.format,
        "rows": stats.rows,
        "annotations": stats.annotations,
        "gold_rows": stats.gold_rows,
        "label_distribution": distribution,
        "label_sources": dict(sorted(stats.sources.items())),
        "label_source_definitions": LABEL_SOURCES,
        "agreement": {
            "definition": AGREEMENT_DEFINITION,
            "mean": round(stats.agreement_sum / stats.agreement_rows, ROUND) if stats.agreement_rows else None,
            "full_agreement_share": (round(stats.full_agreement / stats.agreement_rows, ROUND)
                                     if stats.agreement_rows else None),
            "rows_with_agreement": stats.agreement_rows,
        },
        "taxonomy_version": prepared.target_version_number,
        "multi_label": prepared.multi_label,
        "labels": prepared.keys,
        "annotation_taxonomy_versions": {str(v): n for v, n in sorted(stats.versions.items())},
        "annotations_mapped": stats.mapped,
        "annotations_unmappable": stats.unmappable,
        "date_range": {"first_annotation": _iso(stats.first) if stats.first else None,
                       "last_annotation": _iso(stats.last) if stats.last else None},
        "splits": {name: stats.splits[name] for name in (*splits_service.SPLIT_NAMES, "unassigned")
                   if stats.splits[name]},
        "splits_newly_assigned": prepared.split_assignment,
        "aggregation": {"method": prepared.params.aggregation, "tie_rule": TIE_RULE,
                        **({"dawid_skene": prepared.ds_info} if prepared.ds_info else {})},
        "params": prepared.params.as_dict(),
        "columns": list(prepared.columns),
        **({"csv_cells": CSV_CELLS_RULE} if prepared.params.format == "csv" else {}),
        **({"raw_answer_fields": RAW_ANSWER_FIELDS} if prepared.params.raw else {}),
        "sha256": sha256,
        "size_bytes": size_bytes,
        "generated_at": _iso(timezone.now()),
    }
    return card


def export_card_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown (plain text: every value is escaped of Markdown table syntax)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    title = f"{card.get('project')}" + (f" / {card['name']}" if card.get("name") else "")
    agreement = card.get("agreement") or {}
    lines = [
        f"# Dataset card: {cell(title)}", "",
        f"- Rows (items): {card.get('rows')}",
        f"- Annotations: {card.get('annotations')}",
        f"- Gold rows: {card.get('gold_rows')}",
        f"- Format: {card.get('format')}",
        f"- Taxonomy version: {card.get('taxonomy_version')}"
        f" (answers given under: {cell(card.get('annotation_taxonomy_versions'))};"
        f" mapped {card.get('annotations_mapped')}, unreadable {card.get('annotations_unmappable')})",
        f"- Annotations dated: {(card.get('date_range') or {}).get('first_annotation')} to "
        f"{(card.get('date_range') or {}).get('last_annotation')}",
        f"- Aggregation: {cell((card.get('aggregation') or {}).get('method'))}",
        f"- Ties: {cell((card.get('aggregation') or {}).get('tie_rule'))}",
        f"- Agreement: mean {agreement.get('mean')}, full agreement on {agreement.get('full_agreement_share')}"
        f" of {agreement.get('rows_with_agreement')} rows ({cell(agreement.get('definition'))})",
    ]
    if card.get("csv_cells"):
        lines.append(f"- CSV cells: {cell(card['csv_cells'])}")
    if card.get("sha256"):
        lines.append(f"- SHA-256: `{card['sha256']}` ({card.get('size_bytes')} bytes)")
    lines += ["", "## Label distribution", "", "| label | rows |", "| --- | ---: |"]
    lines += [f"| {cell(k)} | {v} |" for k, v in (card.get("label_distribution") or {}).items()]
    definitions = card.get("label_source_definitions") or {}
    lines += ["", "## Label sources", "", "| source | rows | meaning |", "| --- | ---: | --- |"]
    lines += [f"| {cell(k)} | {v} | {cell(definitions.get(k, ''))} |"
              for k, v in (card.get("label_sources") or {}).items()]
    if card.get("raw_answer_fields"):
        lines += ["", "## Raw answers (`raw` column)", "", "| field | meaning |", "| --- | --- |"]
        lines += [f"| {cell(k)} | {cell(v)} |" for k, v in card["raw_answer_fields"].items()]
    if card.get("splits"):
        lines += ["", "## Splits", "", "| split | rows |", "| --- | ---: |"]
        lines += [f"| {cell(k)} | {v} |" for k, v in card["splits"].items()]
    lines += ["", "## Export parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| {cell(k)} | {cell(json.dumps(v))} |" for k, v in (card.get("params") or {}).items()]
    lines += ["", f"Generated at {card.get('generated_at')}.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- files and snapshots

@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    sha256: str
    size_bytes: int
    card: dict[str, Any]


def _write_atomically(prepared: PreparedExport, directory: Path, final_name: Any) -> ExportResult:
    """Stream into a temporary file beside the target, then rename: a failed export leaves nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in export_stream(prepared):
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        sha = digest.hexdigest()
        path = directory / final_name(sha)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=path, rows=prepared.stats.rows, sha256=sha, size_bytes=size,
                        card=export_card(prepared, sha256=sha, size_bytes=size))


def export_write_file(*, project: Project, params: ExportParams, actor: Actor, path: Path) -> ExportResult:
    """The ``export`` command: write the export to ``path`` (replaced atomically, never half-written)."""
    prepared = export_prepare(project=project, params=params, actor=actor)
    target = Path(path)
    return _write_atomically(prepared, target.parent, lambda _sha: target.name)


def _snapshot_dir(project: Project) -> Path:
    return Path(settings.EXPORT_ROOT) / f"project-{project.pk}"


def _snapshot_name_check(name: str) -> None:
    try:
        validate_slug(name)
    except DjangoValidationError as exc:
        raise ValidationFailed("name: use letters, digits, hyphens and underscores", field="name") from exc
    if len(name) > _SNAPSHOT_NAME_MAX:
        raise ValidationFailed(f"name: at most {_SNAPSHOT_NAME_MAX} characters", field="name")


def _params_from_stored(stored_params: Mapping[str, Any]) -> ExportParams:
    """Parameters in their stored form (``ExportParams.as_dict``) or the API's, parsed again."""
    stored = dict(stored_params)
    # The stored form's list-valued keys have the API's singular names.
    for plural, singular in (("reviewers", "reviewer"), ("labels", "label")):
        if plural in stored:
            stored[singular] = stored.pop(plural)
    if isinstance(stored.get("split"), list):
        stored["split"] = ",".join(str(x) for x in stored["split"])
    return export_params_parse(stored)


def export_snapshot_request(*, project: Project, actor: Actor, name: str, params: ExportParams,
                            enqueue: bool = True) -> ExportSnapshot:
    """Record snapshot ``name`` as pending and, once committed, queue its export; a taken name is a 409.

    Everything that can be checked without exporting is checked here (name, parameters against the
    project), so a bad request fails at once and nothing is queued. The export itself runs in a
    worker (``export_snapshot_run``); the row's ``status`` says how it went.
    """
    _snapshot_name_check(name)
    _bind(project=project, params=params)
    try:
        with transaction.atomic():
            snapshot = ExportSnapshot.objects.create(
                project=project, name=name, format=params.format, params=params.as_dict(),
                status=ExportSnapshot.Status.PENDING, created_by=acting_user(actor))
            audit_record(actor=actor, action="export.snapshot_request", obj=snapshot, project=project,
                         data={"name": name, "params": params.as_dict()})
            if enqueue:
                snapshot_id = snapshot.pk
                transaction.on_commit(lambda: _snapshot_enqueue(snapshot_id))
    except IntegrityError as exc:
        raise Conflict(f"a snapshot named {name!r} already exists", field="name") from exc
    return snapshot


def _snapshot_enqueue(snapshot_id: int) -> None:
    """Send the task by name (the web process need not import the tasks); a broker failure fails the snapshot.

    Never run the export here instead: a download-sized job in a web request is what the queue is for.
    The snapshot says why it failed, and a retry queues it again.
    """
    from celery import current_app

    snapshot = ExportSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        return
    try:
        current_app.send_task("sift.labeling.export_snapshot",
                              args=[snapshot.project_id, snapshot.name, snapshot.params, snapshot.created_by_id])
    except Exception as exc:  # kombu, redis and OSError all mean "not sent"
        logger.exception("could not queue snapshot %s", snapshot_id)
        ExportSnapshot.objects.filter(pk=snapshot_id, status=ExportSnapshot.Status.PENDING).update(
            status=ExportSnapshot.Status.FAILED, finished_at=timezone.now(),
            error=f"could not queue the export (task broker unavailable: {type(exc).__name__}); retry it")


def export_snapshot_run(*, snapshot_id: int, raise_errors: bool = False) -> ExportSnapshot | None:
    """Export a pending snapshot: claim it, write its file, mark it done, or failed with the reason.

    Idempotent: the claim is a compare-and-set from ``pending`` (or from a ``running`` claim older
    than ``SNAPSHOT_STALE_AFTER``, whose worker died), so a second call, or a redelivered task, finds
    the snapshot running or done and does nothing. A transient database error puts the snapshot back
    to pending and re-raises, for the task's retry; any other error fails it (``error`` says why) and
    is re-raised only with ``raise_errors``. Returns the snapshot as it now stands (None if deleted).
    """
    status = ExportSnapshot.Status
    claimed_at = timezone.now()
    claimed = ExportSnapshot.objects.filter(pk=snapshot_id).filter(
        Q(status=status.PENDING) | Q(status=status.RUNNING, started_at__lt=claimed_at - SNAPSHOT_STALE_AFTER),
    ).update(status=status.RUNNING, started_at=claimed_at, finished_at=None, attempts=F("attempts") + 1)
    snapshot = ExportSnapshot.objects.select_related("project", "created_by").filter(pk=snapshot_id).first()
    if not claimed or snapshot is None:
        return snapshot
    mine = ExportSnapshot.objects.filter(pk=snapshot_id, status=status.RUNNING, started_at=claimed_at)
    project, name = snapshot.project, snapshot.name
    result: ExportResult | None = None
    try:
        params = _params_from_stored(snapshot.params)
        prepared = export_prepare(project=project, params=params, actor=snapshot.created_by, audit=False)
        extension = EXTENSIONS[params.format]
        # The file name carries the checksum: a new snapshot can never overwrite an older file.
        result = _write_atomically(prepared, _snapshot_dir(project), lambda sha: f"{name}-{sha[:16]}.{extension}")
        result.path.chmod(0o444)
        card = export_card(prepared, sha256=result.sha256, size_bytes=result.size_bytes, name=name)
        relative = str(result.path.relative_to(Path(settings.EXPORT_ROOT)))
        with transaction.atomic():
            if not mine.update(status=status.DONE, path=relative, sha256=result.sha256, size_bytes=result.size_bytes,
                               row_count=result.rows, card=card, error="", finished_at=timezone.now()):
                # Taken over as stale meanwhile: the other attempt's outcome stands.
                if not ExportSnapshot.objects.filter(path=relative).exists():
                    result.path.unlink(missing_ok=True)
                return ExportSnapshot.objects.filter(pk=snapshot_id).first()
            audit_record(actor=snapshot.created_by, action="export.snapshot", obj=snapshot, project=project,
                         data={"name": name, "sha256": result.sha256, "rows": result.rows,
                               "size_bytes": result.size_bytes, "params": params.as_dict()})
    except Exception as exc:
        if result is not None and not ExportSnapshot.objects.filter(path=str(
                result.path.relative_to(Path(settings.EXPORT_ROOT))), status=status.DONE).exists():
            result.path.unlink(missing_ok=True)
        message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        transient = isinstance(exc, OperationalError | InterfaceError)
        try:
            mine.update(status=status.PENDING if transient else status.FAILED, error=message[:_ERROR_MAX],
                        finished_at=None if transient else timezone.now())
        except (OperationalError, InterfaceError):
            logger.exception("could not record the failure of snapshot %s", snapshot_id)
        if transient or raise_errors:
            raise
        logger.warning("snapshot %s failed: %s", snapshot_id, message)
    return ExportSnapshot.objects.filter(pk=snapshot_id).first()


def export_snapshot_create(*, project: Project, actor: Actor, name: str, params: ExportParams) -> ExportSnapshot:
    """Request and run snapshot ``name`` here and now (the ``export --snapshot`` command, fixtures).

    A failure is raised, and the snapshot stays recorded as failed with the reason (it can be retried).
    """
    snapshot = export_snapshot_request(project=project, actor=actor, name=name, params=params, enqueue=False)
    done = export_snapshot_run(snapshot_id=snapshot.pk, raise_errors=True)
    assert done is not None
    return done


def export_snapshot_retry(*, project: Project, actor: Actor, name: str) -> ExportSnapshot:
    """Queue a failed snapshot again (or one whose worker died mid-run); anything else is a 409."""
    snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
    if snapshot is None:
        raise NotFound(f"no snapshot named {name!r}")
    status = ExportSnapshot.Status
    now = timezone.now()
    with transaction.atomic():
        reset = ExportSnapshot.objects.filter(pk=snapshot.pk).filter(
            Q(status=status.FAILED) | Q(status=status.RUNNING, started_at__lt=now - SNAPSHOT_STALE_AFTER),
        ).update(status=status.PENDING, finished_at=None)
        if not reset:
            raise Conflict(f"snapshot {name!r} is {snapshot.status}: only a failed snapshot can be retried",
                           field="status")
        audit_record(actor=actor, action="export.snapshot_retry", obj=snapshot, project=project,
                     data={"name": name, "error": snapshot.error})
        snapshot_id = snapshot.pk
        transaction.on_commit(lambda: _snapshot_enqueue(snapshot_id))
    snapshot.refresh_from_db()
    return snapshot


def export_snapshot_path(snapshot: ExportSnapshot) -> Path:
    """The snapshot's file; 409 until it is done; refuses any stored path that would leave EXPORT_ROOT."""
    if snapshot.status != ExportSnapshot.Status.DONE:
        raise Conflict(f"snapshot {snapshot.name!r} is {snapshot.status}: its file is not ready", field="status")
    root = Path(settings.EXPORT_ROOT).resolve()
    path = (root / snapshot.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"the file of snapshot {snapshot.name!r} is missing")
    return path


def export_snapshot_ensure(*, project_id: int, name: str, params: Mapping[str, Any],
                           actor_id: int | None = None) -> ExportSnapshot | None:
    """The idempotent body of the ``export_snapshot`` task: run snapshot ``name``, requesting it if need be.

    The API records the snapshot (pending) before it queues the task; a message from an older
    producer may name a snapshot nobody recorded, which is requested here first. Returns the
    snapshot as it stands (done, failed, or running elsewhere), or None when the project is gone.
    Parameters are the stored form (``ExportParams.as_dict``) or the API's; a bad one raises ValidationFailed.
    """
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
    if snapshot is None:
        actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
        try:
            snapshot = export_snapshot_request(project=project, actor=actor, name=name,
                                               params=_params_from_stored(params), enqueue=False)
        except Conflict:
            # Another run won the race for the name: its snapshot is the one.
            snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
            if snapshot is None:
                return None
    return export_snapshot_run(snapshot_id=snapshot.pk)
