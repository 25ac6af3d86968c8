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
  aggregate (``label_source == "adjudication"``); otherwise ``label_source`` is the aggregation
  (``majority`` or ``dawid_skene``), ``tie`` (no hard label, see labeling/services/aggregation.py)
  or ``none`` (no annotation could be read in the target version);
- ``soft_labels``: ``{key: score}`` for every key of the target version: vote shares (majority) or
  posteriors (Dawid-Skene); null when nothing could be read in the target version;
- ``n_annotators``: annotations of the item that pass the filters;
- ``agreement``: **the share of annotators (whose answer reads in the target version) whose label
  set equals the row's ``labels`` exactly**; null when there is none. A tie therefore has agreement
  0 unless it was adjudicated;
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
  the version number it was given in, model version and ``created_at`` (UTC, ISO 8601).

How it streams
--------------
Three ordered queries (items, annotations, decided adjudications, all by item id) are read in
chunks through server-side cursors on PostgreSQL (``connection.chunked_cursor``, what
``.iterator(chunk_size=...)`` uses, but without Django's per-value converters: JSON arrives as text
and goes through small memo tables, timestamps as integer microseconds) and merge-joined in Python,
so an item's text is read once however many reviewers it had. Rows leave in batches: JSON Lines and
CSV 20 rows first, then 500 at a time, Parquet one row group (20,000 rows) at a time through
``ParquetWriter`` into a byte sink. Memory is bounded by one batch, except for Dawid-Skene, which
keeps every filtered answer as three int32s in numpy arrays plus an (items x labels) float matrix
(aggregation.py), and split assignment, which keeps ~50 bytes per exported item in numpy arrays.
On PostgreSQL the read runs in one ``REPEATABLE READ READ ONLY`` transaction with JIT off, so a
Dawid-Skene fit and the rows see the same data. Split assignment happens before, in its own short
locked transaction (splits.py), so a row always shows the split stored for its item.

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
import io
import json
import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, Exists, Func, OuterRef, Q, QuerySet
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
from labeling.services.errors import Conflict, NotFound, ValidationFailed

SCHEMA_VERSION = 1
FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                 "parquet": "application/vnd.apache.parquet"}
AGGREGATIONS = ("majority", "dawid_skene")
GOLD_MODES = ("flag", "exclude")
COLUMNS: tuple[str, ...] = (
    "external_id", "text", "content_hash", "meta", "labels", "label_source", "soft_labels", "n_annotators",
    "agreement", "taxonomy_version", "annotation_taxonomy_versions", "n_mapped", "n_unmappable",
    "selection_reason", "inclusion_probability", "model_version", "is_gold", "gold_labels", "split",
)
RAW_COLUMN = "raw"
AGREEMENT_DEFINITION = ("share of annotators whose answer reads in the target taxonomy version and whose "
                        "label set equals the row's labels exactly")
TIE_RULE = ("single-label: a shared top vote share (or posterior) gives no hard label (label_source 'tie'); "
            "multi-label: a label needs strictly more than half (posterior > 0.5); a decided adjudication "
            "always wins")

READ_CHUNK = 2000
FIRST_FETCH = 50
TEXT_BATCH_ROWS = 500
FIRST_BATCH_ROWS = 20
PARQUET_ROW_GROUP = 20_000
DS_MAX_LABELS = 200
ROUND = 6
_SNAPSHOT_NAME_MAX = 100

# Indices into the row tuples _groups hands out (the SELECT orders below). Rows are read raw (no
# Django converters): JSON columns arrive as text and are parsed through a small cache, because
# label lists repeat endlessly ('["spam"]') and ``meta`` is written out as the stored JSON text.
_I_ID, _I_EXTERNAL_ID, _I_TEXT, _I_HASH, _I_META, _I_GOLD, _I_GOLD_LABELS, _I_SPLIT = range(8)
(_A_ITEM, _A_ID, _A_REVIEWER, _A_VERSION, _A_LABELS, _A_MAPPED_VERSION, _A_MAPPED, _A_REASON, _A_INCLUSION,
 _A_MODEL, _A_CREATED) = range(11)
_ITEM_FIELDS = ("id", "external_id", "text", "content_hash", "meta", "is_gold", "gold_labels", "split")
# Light passes (Dawid-Skene fit, split assignment) skip the text and meta.
_ITEM_FIELDS_LIGHT = ("id", "external_id", "content_hash", "is_gold", "gold_labels", "split")
# created_at comes last, as integer microseconds since the epoch (UTC): comparing and min/max-ing ints
# is cheap, and building a datetime per answer was a fifth of the export's time.
_ANNOTATION_FIELDS = ("item_id", "id", "reviewer_id", "taxonomy_version_id", "labels", "mapped_taxonomy_version_id",
                      "mapped_labels", "selection_reason", "inclusion_probability", "model_version")
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
    _majority: dict[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], bool, tuple[float, ...], float]] = field(
        default_factory=dict)

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
    prepared = PreparedExport(
        project=project, params=params, target_version_id=target_id, target_version_number=target.number or 0,
        multi_label=target.multi_label, keys=keys, key_index=key_index, version_numbers=versions,
        reviewer_ids=reviewer_ids, label_filter=frozenset(params.labels),
        since_us=_micros(params.since) if params.since else 0, until_us=_micros(params.until) if params.until else 0,
    )
    if params.split is not None:
        prepared.split_assignment = _assign_splits(prepared, actor=actor)
    if audit:
        audit_record(actor=actor, action="export.run", obj=project, project=project, data=params.as_dict())
    return prepared


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


def _raw_rows(queryset: QuerySet[Any], *, sqlite_datetime_at: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The queryset's rows straight from the driver, fetched ``READ_CHUNK`` at a time.

    A server-side cursor on PostgreSQL (Django's ``chunked_cursor``); chunked fetches on SQLite.
    Skipping Django's per-value converters is most of the export's speed: JSON stays text
    (parsed through the memo tables), and only SQLite's text datetimes need converting.
    """
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        # A small first fetch: the download's first bytes should not wait for 2,000 rows of three queries.
        size = FIRST_FETCH
        while True:
            rows = cursor.fetchmany(size)
            size = READ_CHUNK
            if not rows:
                return
            if sqlite_datetime_at is None:
                yield from rows
            else:
                at = sqlite_datetime_at
                for row in rows:
                    yield (*row[:at], _sqlite_datetime(row[at]), *row[at + 1:])
    finally:
        cursor.close()


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
    adj_rows = _raw_rows(Adjudication.objects.filter(project_id=project_id, state=Adjudication.State.DECIDED)
                         .order_by("item_id").values_list("item_id", "labels", "taxonomy_version_id"))
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


@dataclass(slots=True)
class _Judged:
    """One item's filtered answers, read in the target version, and the decision."""

    passing: list[tuple[Any, ...]]
    votes: list[tuple[int, ...]]
    n_mapped: int
    n_unmappable: int
    labels: tuple[str, ...]
    source: str
    soft: tuple[float, ...] | None
    agreement: float | None


def _passes(prepared: PreparedExport, ann: tuple[Any, ...]) -> bool:
    params = prepared.params
    if params.taxonomy_version is not None and ann[_A_VERSION] != prepared.target_version_id:
        return False
    if prepared.reviewer_ids is not None and ann[_A_REVIEWER] not in prepared.reviewer_ids:
        return False
    if params.since is not None and ann[_A_CREATED] < prepared.since_us:
        return False
    return not (params.until is not None and ann[_A_CREATED] >= prepared.until_us)


def _read_votes(prepared: PreparedExport, anns: list[tuple[Any, ...]]) -> tuple[
        list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[int, ...]], int, int]:
    """Filtered answers; the readable ones with their label indices in the target version; counts.

    Returns ``(passing, readable, votes, n_mapped, n_unmappable)`` with ``votes[j]`` the answer of
    ``readable[j]`` (sorted label indices). The reading rule is taxonomy_migrations.py's:
    ``labels`` under the target version, else ``mapped_labels`` mapped onto it, else unreadable.
    """
    target = prepared.target_version_id
    filtered = prepared.params.filters_annotations
    passing: list[tuple[Any, ...]] = []
    readable: list[tuple[Any, ...]] = []
    votes: list[tuple[int, ...]] = []
    n_mapped = n_unmappable = 0
    for ann in anns:
        if filtered and not _passes(prepared, ann):
            continue
        passing.append(ann)
        if ann[_A_VERSION] == target:
            vote, mapped = prepared.vote(ann[_A_LABELS]), False
        elif ann[_A_MAPPED_VERSION] == target and ann[_A_MAPPED] is not None:
            vote, mapped = prepared.vote(ann[_A_MAPPED]), True
        else:
            vote = None
        if vote is None:
            n_unmappable += 1
            continue
        n_mapped += mapped
        readable.append(ann)
        votes.append(vote)
    return passing, readable, votes, n_mapped, n_unmappable


def _majority(prepared: PreparedExport, votes: list[tuple[int, ...]]
              ) -> tuple[tuple[int, ...], bool, tuple[float, ...], float]:
    """(labels, tie, rounded soft scores, agreement) for a multiset of votes; memoised per export."""
    key = tuple(sorted(votes))
    hit = prepared._majority.get(key)
    if hit is None:
        soft = majority_soft(votes, len(prepared.keys))
        decision = decide(soft, multi_label=prepared.multi_label)
        agreement = round(sum(1 for v in votes if v == decision.labels) / len(votes), ROUND)
        hit = (decision.labels, decision.tie, tuple(round(x, ROUND) for x in soft), agreement)
        if len(prepared._majority) >= _JSON_CACHE_MAX:
            prepared._majority.clear()
        prepared._majority[key] = hit
    return hit


def _judge(prepared: PreparedExport, anns: list[tuple[Any, ...]], adj: tuple[Any, ...] | None,
           posterior: Sequence[float] | np.ndarray | None) -> _Judged:
    passing, _readable, votes, n_mapped, n_unmappable = _read_votes(prepared, anns)
    keys = prepared.keys
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
            agreement = round(sum(1 for v in votes if v == chosen) / len(votes), ROUND)
        else:
            chosen, tie, soft, agreement = _majority(prepared, votes)
            source = "majority"
        if tie:
            source = "tie"
    if adj is not None and adj[2] in (None, prepared.target_version_id):
        decided = prepared.vote(adj[1]) if adj[1] is not None else None
        if decided is not None:
            chosen = decided
            source = "adjudication"
            if votes:
                agreement = round(sum(1 for v in votes if v == chosen) / len(votes), ROUND)
    labels = tuple(keys[k] for k in chosen)
    return _Judged(passing, votes, n_mapped, n_unmappable, labels, source, soft, agreement)


def _keep(prepared: PreparedExport, item: tuple[Any, ...], judged: _Judged) -> bool:
    """The row filters: gold handling, minimum annotators and agreement, label."""
    params = prepared.params
    if not judged.passing and (params.filters_annotations or judged.source != "adjudication"):
        return False
    if params.gold == "exclude" and item[_I_GOLD]:
        return False
    if params.min_annotators is not None and len(judged.passing) < params.min_annotators:
        return False
    if params.min_agreement is not None and (judged.agreement is None or judged.agreement < params.min_agreement):
        return False
    return not (prepared.label_filter and not prepared.label_filter.intersection(judged.labels))


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
    workers: dict[int, int] = {}
    gold: list[list[int] | None] = []
    used_labels: set[int] = set()
    multi = prepared.multi_label
    for item, anns, _adj in _groups(prepared, light=True):
        _passing, readable, votes, _, _ = _read_votes(prepared, anns)
        if not votes:
            continue
        pos = len(item_ids)
        item_ids.append(item[_I_ID])
        for ann, vote in zip(readable, votes, strict=True):
            w = workers.setdefault(ann[_A_REVIEWER], len(workers))
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
        pinned = prepared.vote(item[_I_GOLD_LABELS]) if item[_I_GOLD] and item[_I_GOLD_LABELS] else None
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
        posteriors = _fit_dawid_skene(prepared) if params.aggregation == "dawid_skene" else None
        # Compact per exported item: id (8 bytes), content digest (32), stratum (4), stored split (1).
        item_ids = array("q")
        hashes = bytearray()
        strata = array("i")
        existing = array("b")
        stratum_index: dict[str, int] = {}
        for item, anns, adj in _groups(prepared, light=True):
            post = posteriors.row(item[_I_ID]) if posteriors is not None else None
            judged = _judge(prepared, anns, adj, post)
            if not _keep(prepared, item, judged):
                continue
            item_ids.append(item[_I_ID])
            hashes += _hash_bytes(item[_I_HASH])
            strata.append(stratum_index.setdefault("+".join(judged.labels), len(stratum_index)))
            existing.append(splits_service.SPLIT_INDEX.get(item[_I_SPLIT] or "", splits_service.NO_SPLIT))
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


# --------------------------------------------------------------------------- rows

def _iso(moment: datetime | int) -> str:
    if isinstance(moment, int):
        moment = _from_micros(moment)
    return moment.astimezone(UTC).isoformat()


def _rows(prepared: PreparedExport) -> Iterator[tuple[Any, ...]]:
    """The export's rows, as tuples in ``prepared.columns`` order, updating the card figures."""
    posteriors = _fit_dawid_skene(prepared) if prepared.params.aggregation == "dawid_skene" else None
    versions = prepared.version_numbers
    target_number = prepared.target_version_number
    raw = prepared.params.raw
    stats = prepared.stats
    for item, anns, adj in _groups(prepared, light=False):
        post = posteriors.row(item[_I_ID]) if posteriors is not None else None
        judged = _judge(prepared, anns, adj, post)
        if not _keep(prepared, item, judged):
            continue
        first = anns[0] if anns else None
        passing = judged.passing
        answer_versions = sorted({versions.get(a[_A_VERSION], 0) for a in passing})
        gold = bool(item[_I_GOLD])
        # ``meta`` stays the stored JSON text: writers embed it as is (JSON Lines) or as a string cell.
        row: tuple[Any, ...] = (
            item[_I_EXTERNAL_ID], item[_I_TEXT], item[_I_HASH], item[_I_META] or "{}", list(judged.labels),
            judged.source, judged.soft, len(passing), judged.agreement, target_number, answer_versions,
            judged.n_mapped, judged.n_unmappable,
            first[_A_REASON] if first else None, first[_A_INCLUSION] if first else None,
            first[_A_MODEL] if first else None,
            gold, prepared.parse_json(item[_I_GOLD_LABELS]) if gold else None, item[_I_SPLIT] or None,
        )
        if raw:
            row += ([
                {"reviewer": prepared.username(a[_A_REVIEWER]), "labels": prepared.parse_json(a[_A_LABELS]),
                 "mapped_labels": prepared.parse_json(a[_A_MAPPED]),
                 "taxonomy_version": versions.get(a[_A_VERSION], 0), "model_version": a[_A_MODEL],
                 "created_at": _iso(a[_A_CREATED])}
                for a in passing
            ],)
        # Card figures.
        stats.rows += 1
        stats.annotations += len(passing)
        stats.gold_rows += gold
        if judged.labels:
            stats.labels.update(judged.labels)
        else:
            stats.labels["(no label)"] += 1
        stats.sources[judged.source] += 1
        stats.splits[item[_I_SPLIT] or "unassigned"] += 1
        stats.mapped += judged.n_mapped
        stats.unmappable += judged.n_unmappable
        for a in passing:
            stats.versions[versions.get(a[_A_VERSION], 0)] += 1
            created = a[_A_CREATED]
            if stats.first is None or created < stats.first:
                stats.first = created
            if stats.last is None or created > stats.last:
                stats.last = created
        if judged.agreement is not None:
            stats.agreement_rows += 1
            stats.agreement_sum += judged.agreement
            stats.full_agreement += 1 if judged.agreement == 1.0 else 0
        yield row


# --------------------------------------------------------------------------- writers

# One encoder for the whole module: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


_META = COLUMNS.index("meta")
_SOFT = COLUMNS.index("soft_labels")


class _JsonlWriter:
    """One JSON object per line, keys in column order; ``meta`` is spliced in as stored JSON."""

    def __init__(self, prepared: PreparedExport) -> None:
        self.keys = prepared.keys
        self.head = prepared.columns[:_META]
        self.tail = prepared.columns[_META + 1:]

    def begin(self) -> bytes:
        return b""

    def write(self, rows: list[tuple[Any, ...]]) -> bytes:
        keys, head, tail = self.keys, self.head, self.tail
        lines = []
        for row in rows:
            soft = row[_SOFT]
            rest = dict(zip(tail, row[_META + 1:], strict=True))
            rest["soft_labels"] = dict(zip(keys, soft, strict=True)) if soft is not None else None
            first = _json(dict(zip(head, row[:_META], strict=True)))
            lines.append(f'{first[:-1]},"meta":{row[_META]},{_json(rest)[1:]}\n')
        return "".join(lines).encode()

    def finish(self) -> bytes:
        return b""


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _json(value)
    return value


class _CsvWriter:
    """RFC 4180 quoting, "\\n" line ends; lists and objects as compact JSON, null as an empty cell.

    Cells are written verbatim (no "=" prefix escaping): this is a training set for programs, and
    rewriting a message that starts with "=" would change the data. Open it in a spreadsheet at your risk.
    """

    def __init__(self, prepared: PreparedExport) -> None:
        self.columns = prepared.columns
        self.keys = prepared.keys

    def _lines(self, rows: Sequence[Sequence[Any]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode()

    def begin(self) -> bytes:
        return self._lines([self.columns])

    def write(self, rows: list[tuple[Any, ...]]) -> bytes:
        keys = self.keys
        cells = []
        for row in rows:
            out = [_csv_cell(v) for v in row]
            out[_META] = row[_META]
            soft = row[_SOFT]
            out[_SOFT] = _json(dict(zip(keys, soft, strict=True))) if soft is not None else ""
            cells.append(out)
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
        ]))))
    metadata = {b"sift.schema_version": str(SCHEMA_VERSION).encode(),
                b"sift.export_params": _json(prepared.params.as_dict()).encode()}
    return pa.schema(fields, metadata=metadata)


class _ParquetWriter:
    """Row groups streamed through a byte sink: the file is never held whole, in memory or on disk."""

    def __init__(self, prepared: PreparedExport) -> None:
        import pyarrow.parquet as pq

        self.schema = parquet_schema(prepared)
        self.sink = _ByteSink()
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.zeros = (0.0,) * len(prepared.keys)

    def begin(self) -> bytes:
        return self.sink.take()

    def write(self, rows: list[tuple[Any, ...]]) -> bytes:
        import pyarrow as pa

        columns = list(zip(*rows, strict=True))
        arrays = [None if i == _SOFT else pa.array(col, type=f.type)
                  for i, (col, f) in enumerate(zip(columns, self.schema, strict=True))]
        # Soft scores as one float column per label, assembled into the struct (no per-row dicts).
        softs = columns[_SOFT]
        missing = [s is None for s in softs]
        filled = [s if s is not None else self.zeros for s in softs]
        per_label = [pa.array(col, type=pa.float64()) for col in zip(*filled, strict=True)]
        arrays[_SOFT] = pa.StructArray.from_arrays(per_label, fields=list(self.schema.field(_SOFT).type),
                                                   mask=pa.array(missing, type=pa.bool_()))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        return self.sink.take()

    def finish(self) -> bytes:
        self.writer.close()
        return self.sink.take()


_WRITERS: dict[str, Any] = {"jsonl": _JsonlWriter, "csv": _CsvWriter, "parquet": _ParquetWriter}


def export_stream(prepared: PreparedExport) -> Iterator[bytes]:
    """The export's bytes, in chunks; the card figures are complete once it is exhausted."""
    if prepared.finished:
        raise RuntimeError("a prepared export streams once")
    full_batch = PARQUET_ROW_GROUP if prepared.params.format == "parquet" else TEXT_BATCH_ROWS
    # Text formats send their first rows at once, so a download starts as soon as rows exist.
    batch_rows = full_batch if prepared.params.format == "parquet" else FIRST_BATCH_ROWS
    with _read_transaction():
        writer = _WRITERS[prepared.params.format](prepared)
        head = writer.begin()
        if head:
            yield head
        batch: list[tuple[Any, ...]] = []
        for row in _rows(prepared):
            batch.append(row)
            if len(batch) >= batch_rows:
                yield writer.write(batch)
                batch = []
                batch_rows = full_batch
        if batch:
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
    if card.get("sha256"):
        lines.append(f"- SHA-256: `{card['sha256']}` ({card.get('size_bytes')} bytes)")
    lines += ["", "## Label distribution", "", "| label | rows |", "| --- | ---: |"]
    lines += [f"| {cell(k)} | {v} |" for k, v in (card.get("label_distribution") or {}).items()]
    lines += ["", "## Label sources", "", "| source | rows |", "| --- | ---: |"]
    lines += [f"| {cell(k)} | {v} |" for k, v in (card.get("label_sources") or {}).items()]
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


def export_snapshot_create(*, project: Project, actor: Actor, name: str, params: ExportParams) -> ExportSnapshot:
    """Export and keep the file as the named, immutable snapshot ``name``; a taken name is a 409."""
    try:
        validate_slug(name)
    except DjangoValidationError as exc:
        raise ValidationFailed("name: use letters, digits, hyphens and underscores", field="name") from exc
    if len(name) > _SNAPSHOT_NAME_MAX:
        raise ValidationFailed(f"name: at most {_SNAPSHOT_NAME_MAX} characters", field="name")
    if ExportSnapshot.objects.filter(project=project, name=name).exists():
        raise Conflict(f"a snapshot named {name!r} already exists", field="name")
    prepared = export_prepare(project=project, params=params, actor=actor, audit=False)
    extension = EXTENSIONS[params.format]
    # The file name carries the checksum: a new snapshot can never overwrite an older file.
    result = _write_atomically(prepared, _snapshot_dir(project), lambda sha: f"{name}-{sha[:16]}.{extension}")
    result.path.chmod(0o444)
    card = export_card(prepared, sha256=result.sha256, size_bytes=result.size_bytes, name=name)
    try:
        with transaction.atomic():
            snapshot = ExportSnapshot.objects.create(
                project=project, name=name, format=params.format, params=params.as_dict(),
                path=str(result.path.relative_to(Path(settings.EXPORT_ROOT))), sha256=result.sha256,
                size_bytes=result.size_bytes, row_count=result.rows, card=card, created_by=acting_user(actor),
            )
            audit_record(actor=actor, action="export.snapshot", obj=snapshot, project=project,
                         data={"name": name, "sha256": result.sha256, "rows": result.rows,
                               "size_bytes": result.size_bytes, "params": params.as_dict()})
    except IntegrityError as exc:
        # Lost a race for the name: the other snapshot stands; ours is removed unless identical bytes.
        if not ExportSnapshot.objects.filter(project=project, path=str(
                result.path.relative_to(Path(settings.EXPORT_ROOT)))).exists():
            result.path.unlink(missing_ok=True)
        raise Conflict(f"a snapshot named {name!r} already exists", field="name") from exc
    return snapshot


def export_snapshot_path(snapshot: ExportSnapshot) -> Path:
    """The snapshot's file; refuses any stored path that would leave EXPORT_ROOT."""
    root = Path(settings.EXPORT_ROOT).resolve()
    path = (root / snapshot.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"the file of snapshot {snapshot.name!r} is missing")
    return path


def export_snapshot_ensure(*, project_id: int, name: str, params: Mapping[str, Any],
                           actor_id: int | None = None) -> ExportSnapshot | None:
    """Create snapshot ``name`` unless it exists: the idempotent body of the ``export_snapshot`` task.

    Returns the snapshot (new or already there), or None when the project is gone. Parameters are
    the stored form (``ExportParams.as_dict``) or the API's; a bad one raises ValidationFailed.
    """
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    existing = ExportSnapshot.objects.filter(project=project, name=name).first()
    if existing is not None:
        return existing
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
    stored = dict(params)
    # Accept the stored form too: its list-valued keys have the API's singular names.
    for plural, singular in (("reviewers", "reviewer"), ("labels", "label")):
        if plural in stored:
            stored[singular] = stored.pop(plural)
    if isinstance(stored.get("split"), list):
        stored["split"] = ",".join(str(x) for x in stored["split"])
    try:
        return export_snapshot_create(project=project, actor=actor, name=name, params=export_params_parse(stored))
    except Conflict:
        # Another run won the race for the name: its snapshot is the one.
        return ExportSnapshot.objects.filter(project=project, name=name).first()
