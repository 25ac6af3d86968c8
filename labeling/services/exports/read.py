"""The read side of an export: binding parameters to a project, the read transaction, and per-item aggregates.

``PreparedExport`` is a validated export bound to its target taxonomy version (``_bind``). On PostgreSQL
``_sql_aggregates`` folds every item's answers into short text keys in one query, read through a server-side
cursor inside one ``REPEATABLE READ READ ONLY`` transaction (``_read_transaction``); on SQLite, and for
filters SQL cannot express, ``_python_aggregates`` builds the same tuples from three ordered reads.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BigIntegerField, Exists, Func, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

from labeling.models import (
    OPEN_STATES,
    Adjudication,
    Annotation,
    AnswerSource,
    Item,
    Label,
    Project,
    SuspectedError,
    TaxonomyVersion,
)
from labeling.models.annotations import answer_read_in, answer_read_in_sql
from labeling.services.errors import ValidationFailed
from labeling.services.exports.params import (
    COLUMNS,
    DS_MAX_LABELS,
    FIRST_FETCH,
    PENDING_ADJUDICATION,
    RAW_COLUMN,
    READ_CHUNK,
    ExportParams,
)

# Indices into the row tuples _groups hands out (the SELECT orders below). Rows are read raw (no
# Django converters): JSON columns arrive as text and are parsed through a small cache, because
# label lists repeat endlessly ('["spam"]') and ``meta`` is written out as the stored JSON text.
_I_ID, _I_EXTERNAL_ID, _I_TEXT, _I_HASH, _I_META, _I_GOLD, _I_GOLD_LABELS, _I_SPLIT = range(8)
(_A_ITEM, _A_ID, _A_REVIEWER, _A_VERSION, _A_LABELS, _A_MAPPED_VERSION, _A_MAPPED, _A_REASON, _A_INCLUSION,
 _A_MODEL, _A_LEAD_TIME, _A_COMMENT, _A_SOURCE, _A_CREATED) = range(14)
_ITEM_FIELDS = ("id", "external_id", "text", "content_hash", "meta", "is_gold", "gold_labels", "split")
# Light passes (Dawid-Skene fit, split assignment) skip the text and meta.
_ITEM_FIELDS_LIGHT = ("id", "external_id", "content_hash", "is_gold", "gold_labels", "split")
# created_at comes last, as integer microseconds since the epoch (UTC): comparing and min/max-ing ints
# is cheap, and building a datetime per answer was a fifth of the export's time.
_ANNOTATION_FIELDS = ("item_id", "id", "reviewer_id", "taxonomy_version_id", "labels", "mapped_taxonomy_version_id",
                      "mapped_labels", "selection_reason", "inclusion_probability", "model_version", "lead_time_ms",
                      "comment", "source")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_CACHE_MAX = 50_000
_MISSING = object()


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
    suspected: int = 0
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
    # Items with an unresolved suspected label error (labeling/models/label_errors.py), read in the export's
    # snapshot by ``read_suspected``: a few hundred ids at most, so a set beats a join per row.
    suspected: frozenset[int] = frozenset()
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

def read_suspected(prepared: PreparedExport) -> None:
    """Load the ids of the project's items whose suspected label error no re-check has resolved yet (the
    ``suspected_error`` column). Call inside the export's read transaction, so it matches the rows."""
    prepared.suspected = frozenset(SuspectedError.objects.filter(
        project_id=prepared.project.pk, state__in=OPEN_STATES).values_list("item_id", flat=True))


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
 _G_VERSIONS, _G_LINEAGE, _G_FIRST, _G_LAST, _G_ADJ, _G_RAW, _G_PROPAGATED) = range(18)
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
    in_languages = ("AND COALESCE(i.language, '') IN (" + ", ".join(["%s"] * len(params.languages)) + ")"
                    if params.languages else "")
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
                    WHEN d.taxonomy_version_id IS NULL OR d.taxonomy_version_id = %s THEN d.labels::text END,
               NULL, COALESCE(a.propagated, FALSE)
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
                   (EXTRACT(EPOCH FROM max(created_at){only}) * 1000000)::bigint AS last_us,
                   bool_and(source = '{AnswerSource.PROPAGATED}'){only} AS propagated
            FROM (
                SELECT item_id, id, reviewer_id, taxonomy_version_id, selection_reason, inclusion_probability,
                       model_version, created_at, source, {" AND ".join(conditions) or "TRUE"} AS passes,
                       {answer_read_in_sql()} AS token
                FROM {Annotation._meta.db_table} x
                WHERE project_id = %s AND {_propagated_sql(params)}
            ) answers
            GROUP BY item_id
        ) a ON a.item_id = i.id
        LEFT JOIN {Adjudication._meta.db_table} d ON d.item_id = i.id AND d.state IN (%s, %s)
        WHERE i.project_id = %s AND {"a.n > 0" if filtered else "(a.item_id IS NOT NULL OR d.state = %s)"}
          {in_languages}
        ORDER BY i.id
    """  # noqa: S608 - only this module's constant fragments are interpolated; every value is a parameter
    project_id = prepared.project.pk
    pending, decided = Adjudication.State.PENDING, Adjudication.State.DECIDED
    return sql, [pending, PENDING_ADJUDICATION, target, *pass_params, target, target, project_id, pending, decided,
                 project_id, *([] if filtered else [decided]), *params.language_codes]


def _propagated_sql(params: ExportParams) -> str:
    """Which answers of alias ``x`` an export reads: ``propagated=exclude`` reads human answers only; otherwise a
    propagated answer is read only while its item has no human answer (a human who verified it supersedes it)."""
    human = f"x.source = '{AnswerSource.HUMAN}'"
    if params.propagated == "exclude":
        return human
    return (f"({human} OR NOT EXISTS (SELECT 1 FROM {Annotation._meta.db_table} h "  # noqa: S608 - constants
            f"WHERE h.item_id = x.item_id AND h.source = '{AnswerSource.HUMAN}'))")


def _read_propagated(params: ExportParams, anns: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``_propagated_sql`` over one item's answers, in Python."""
    human = [a for a in anns if a[_A_SOURCE] == AnswerSource.HUMAN]
    return human if human or params.propagated == "exclude" else anns


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
    if prepared.params.languages:
        items = items.alias(language_or_undetermined=Coalesce("language", Value(""))).filter(
            language_or_undetermined__in=prepared.params.language_codes)
    annotations = Annotation.objects.filter(project_id=project_id)
    if prepared.params.filters_annotations or prepared.params.languages:
        annotations = annotations.filter(item__in=items.values("id"))
    if prepared.params.filters_annotations:
        items = items.filter(Exists(in_project.filter(_annotation_filter(prepared))))
    else:
        decided = Adjudication.objects.filter(project_id=project_id, item=OuterRef("pk"),
                                              state=Adjudication.State.DECIDED)
        items = items.filter(Exists(in_project) | Exists(decided))
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
    for item, all_anns, adj in _groups(prepared, light=light):
        anns = _read_propagated(prepared.params, all_anns)
        if not anns and (adj is None or adj[3] != Adjudication.State.DECIDED):
            continue  # only excluded propagated answers: not a labelled item in this export
        passing = [a for a in anns if _passes(prepared, a)] if filtered else anns
        if filtered and not passing:
            continue
        tokens = []
        for a in passing:
            source, labels = answer_read_in(target, given_version_id=a[_A_VERSION], labels=a[_A_LABELS],
                                            mapped_version_id=a[_A_MAPPED_VERSION], mapped_labels=a[_A_MAPPED])
            tokens.append(source if labels is None else source + _text(labels))
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
            adj_text, raw_answers, bool(passing) and all(a[_A_SOURCE] == AnswerSource.PROPAGATED for a in passing),
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


# One encoder for the whole module: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_encode_string = encode_basestring  # the C encoder json uses for str with ensure_ascii=False


def _json(value: Any) -> str:
    return _ENCODER.encode(value)
