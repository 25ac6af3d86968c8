"""Database -> arrays: a project's embedded items as one numpy buffer, and its training labels.

The pool read is the one place a retrain touches every item of a project, so it never goes through the ORM:
at 1M items an ORM round trip would build a million model instances (minutes of Python and gigabytes of
memory). On PostgreSQL one ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` streams fixed-width rows
(id, open flag, 768-byte float16 vector) that ``numpy.frombuffer`` decodes in one call, without a Python loop
per row; bench/retrain_loop.py prints the figures (it is the largest phase at 1M items). SQLite (the demo)
reads the same SELECT through a plain cursor.

Why read from the database every time rather than keep a worker-side .npy copy per (project, embedder): the
database is the source of truth and is shared by every worker, so there is nothing to invalidate when items are
re-imported with new text, when another worker picks the job up, or after a crash. Measured on the shared
2-core box under heavy load (bench/retrain_loop.py, same run): 100k items: binary COPY 3.3 s, ORM 8.4 s,
np.load of the vectors 0.8 s; 1M items: binary COPY 20-26 s, np.load 6.9 s. A .npy cache still has to read every
item's id and open flag each retrain (ranking needs the current open set), which alone took 5.6 s at 1M (libpq
hands COPY rows over one by one, ~1M client calls either way). So the file would save ~40% of this phase in
exchange for an invalidation protocol; the per-row client cost, not the vectors, is what remains.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q

from labeling.models import Adjudication, Annotation, Item
from labeling.models.annotations import answer_read_in
from learning.models import Embedding

# Reasons whose picks are uniform random draws from the pool with a recorded inclusion probability: the
# probability sample behind the unbiased figures (learning/core/ranking.py).
PROBABILITY_SAMPLE_REASONS = ("exploration", "random")

_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


class PoolFormatError(RuntimeError):
    """The stored vectors do not decode as one (n, dim) float16 array (mixed dimensions for one embedder)."""


@dataclass(frozen=True)
class Pool:
    """Every item of a project that has a vector for the embedder, in item-id order.

    ``rankable`` marks items the ranking may return: still open (n_done < n_required) and not gold (gold items
    are served by the queue's gold rate, not the ranking). ``vectors`` are float16, unit norm up to rounding.
    """

    item_ids: np.ndarray
    rankable: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``item_ids`` in the pool, and a mask of which ids were found (have a vector)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(self) == 0 or ids.shape[0] == 0:
            return np.zeros(ids.shape[0], dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
        pos = np.searchsorted(self.item_ids, ids)
        pos_clipped = np.minimum(pos, len(self) - 1)
        found = self.item_ids[pos_clipped] == ids
        return pos_clipped.astype(np.int64), found


def _pool_select() -> str:
    item = connection.ops.quote_name(Item._meta.db_table)
    emb = connection.ops.quote_name(Embedding._meta.db_table)
    return (
        f"SELECT i.id, (i.n_done < i.n_required AND NOT i.is_gold), e.vector "  # noqa: S608 (table names only)
        f"FROM {item} i JOIN {emb} e ON e.content_hash = i.content_hash AND e.embedder = %s "
        f"WHERE i.project_id = %s"
    )


# Per worker process: the last few projects' (ids, vectors), keyed by the embed job's generation. See load_pool.
_POOL_CACHE: OrderedDict[tuple[int, str], tuple[str, Pool]] = OrderedDict()


def load_pool(*, project_id: int, embedder_name: str, generation: str | None = None) -> Pool:
    """Read the project's embedded items into arrays (see the module docstring for why not the ORM).

    With ``generation`` (a token that changes whenever the set of embedded items can have changed: the
    project's embed-job generation, learning/services/retrain.py), the worker keeps the ids and vectors of the
    last ``SIFT_POOL_CACHE_PROJECTS`` projects in memory. The database stays the source of truth: a warm call
    re-reads only which items are closed or gold (a few thousand ids, not a million vectors), and any change
    of generation, a restart or another worker simply reads everything again. Vectors never change under a
    (content hash, embedder) key, and items only gain vectors through the embed task, whose every requested
    pass bumps the generation.
    """
    key = (project_id, embedder_name)
    cached = _POOL_CACHE.get(key) if generation is not None else None
    if cached is not None and cached[0] == generation:
        _POOL_CACHE.move_to_end(key)
        ids, vectors = cached[1].item_ids, cached[1].vectors
        return Pool(ids, ~np.isin(ids, _unrankable_ids(project_id)), vectors)
    pool = _in_id_order(_load_pool_copy(project_id, embedder_name) if connection.vendor == "postgresql"
                        else _load_pool_cursor(project_id, embedder_name))
    limit = settings.SIFT_POOL_CACHE_PROJECTS
    if generation is not None and limit > 0 and len(pool):
        _POOL_CACHE[key] = (generation, pool)
        _POOL_CACHE.move_to_end(key)
        while len(_POOL_CACHE) > limit:
            _POOL_CACHE.popitem(last=False)
    return pool


def _unrankable_ids(project_id: int) -> np.ndarray:
    """Ids of the project's finished or gold items: what a cached pool must not rank (one filtered scan)."""
    ids = Item.objects.filter(project_id=project_id).filter(Q(n_done__gte=F("n_required")) | Q(is_gold=True))
    return np.fromiter(ids.values_list("id", flat=True).iterator(chunk_size=20_000), dtype=np.int64)


def _in_id_order(pool: Pool) -> Pool:
    # Sorted here rather than by ORDER BY: PostgreSQL would sort the wide (vector) rows, spilling to disk at 1M;
    # numpy sorts 8-byte ids and gathers once. Id order makes positions, and so rankings, reproducible.
    ids = pool.item_ids
    if ids.shape[0] < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return pool
    order = np.argsort(ids, kind="stable")
    return Pool(ids[order], pool.rankable[order], pool.vectors[order])


def _empty_pool() -> Pool:
    return Pool(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros((0, 0), dtype=np.float16))


def _load_pool_cursor(project_id: int, embedder_name: str) -> Pool:
    with connection.cursor() as cursor:
        cursor.execute(_pool_select(), [embedder_name, project_id])
        rows = cursor.fetchall()
    if not rows:
        return _empty_pool()
    widths = {len(row[2]) for row in rows}
    if len(widths) != 1:
        raise PoolFormatError(f"vectors of embedder {embedder_name!r} have mixed sizes {sorted(widths)}")
    width = widths.pop()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    rankable = np.fromiter((bool(row[1]) for row in rows), dtype=bool, count=len(rows))
    raw = b"".join(bytes(row[2]) for row in rows)
    vectors = np.frombuffer(raw, dtype="<f2").reshape(len(rows), width // 2).copy()
    return Pool(ids, rankable, vectors)


def _load_pool_copy(project_id: int, embedder_name: str) -> Pool:
    from psycopg import sql

    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(
        sql.SQL(_pool_select().replace("%s", "{}")).format(sql.Literal(embedder_name), sql.Literal(project_id))
    )
    buf = bytearray()
    with transaction.atomic(), connection.cursor() as cursor:
        # Enough memory for the join to hash 1M (id, hash) rows without spilling to disk; local to this read.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        with cursor.cursor.copy(query) as copy:
            for chunk in copy:
                buf += chunk
    return decode_binary_copy(buf, embedder_name=embedder_name)


def decode_binary_copy(buf: bytes | bytearray, *, embedder_name: str = "") -> Pool:
    """Decode PostgreSQL's binary COPY of (bigint, boolean, bytea) rows whose bytea all have one length.

    Format: an 11-byte signature, int32 flags, int32 extension length (+ extension), then per row an int16
    field count and (int32 length, bytes) per field, all big-endian, then an int16 -1 trailer. With fixed-width
    values every row has the same size, so the body is one structured numpy array.
    """
    if bytes(buf[:11]) != _PGCOPY_SIGNATURE:
        raise PoolFormatError("not a PostgreSQL binary COPY stream")
    ext = int.from_bytes(buf[15:19], "big")
    start = 19 + ext
    if bytes(buf[-2:]) != b"\xff\xff":
        raise PoolFormatError("binary COPY stream is truncated (no trailer)")
    body_len = len(buf) - 2 - start
    if body_len == 0:
        return _empty_pool()
    # First row: int16 nfields, int32 len + int64 id, int32 len + bool, int32 len + vector.
    width = int.from_bytes(buf[start + 2 + 4 + 8 + 4 + 1 : start + 2 + 4 + 8 + 4 + 1 + 4], "big", signed=True)
    if width <= 0 or width % 2:
        raise PoolFormatError(f"vector of {width} bytes is not float16 data")
    row = np.dtype([("n", ">i2"), ("l_id", ">i4"), ("id", ">i8"), ("l_open", ">i4"), ("open", "u1"),
                    ("l_vec", ">i4"), ("vec", "u1", (width,))])
    if body_len % row.itemsize:
        raise PoolFormatError(f"vectors of embedder {embedder_name!r} have mixed sizes")
    n = body_len // row.itemsize
    rows = np.frombuffer(buf, dtype=row, count=n, offset=start)
    if np.any(rows["n"] != 3) or np.any(rows["l_vec"] != width) or np.any(rows["l_id"] != 8):
        raise PoolFormatError(f"vectors of embedder {embedder_name!r} have mixed sizes or null fields")
    vectors = np.ascontiguousarray(rows["vec"]).view("<f2").reshape(n, width // 2)
    return Pool(rows["id"].astype(np.int64), rows["open"].astype(bool), vectors)


@dataclass
class LabelSet:
    """Training labels, one per labelled item, under the project's current taxonomy version.

    ``labels`` holds a leaf key per item (single-label) or a frozenset of leaf keys (multi-label).
    ``sampled`` marks items at least one of whose answers came from a probability-sample pick (exploration),
    with that pick's ``inclusion`` probability: the unbiased evaluation sample.
    """

    item_ids: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)
    inclusion: list[float] = field(default_factory=list)
    # Why annotations did not become training labels, for the model version's metrics.
    skipped: Counter[str] = field(default_factory=Counter)


def load_labels(*, project_id: int, taxonomy_version_id: int, leaf_keys: Sequence[str],
                multi_label: bool, up_to_annotation: int | None = None) -> LabelSet:
    """The training label of each item: the adjudicated answer where decided, else the reviewers' majority.

    An annotation counts under the current taxonomy version when it was given in it, or was mapped onto it by a
    label migration (``mapped_labels``); answers that no migration could map are not determinable and skipped.
    Non-leaf answers are dropped (the model is fitted on leaves). A single-label tie is skipped: the item waits
    for another opinion or an adjudication rather than being trained on a coin flip. ``up_to_annotation`` caps
    the annotation ids read, so a model holds exactly the labels its fingerprint names (later ones belong to
    the follow-up run).
    """
    leaves = set(leaf_keys)
    scope = Annotation.objects.filter(project_id=project_id)
    if up_to_annotation is not None:
        scope = scope.filter(id__lte=up_to_annotation)
    rows = (
        scope.filter(Q(taxonomy_version_id=taxonomy_version_id) | Q(mapped_taxonomy_version_id=taxonomy_version_id))
        .order_by("item_id", "id")
        .values_list("item_id", "labels", "taxonomy_version_id", "mapped_labels", "mapped_taxonomy_version_id",
                     "selection_reason", "inclusion_probability")
    )
    per_item: dict[int, list[list[str]]] = {}
    sampled: dict[int, float] = {}
    out = LabelSet()
    matched = 0
    for item_id, labels, version_id, mapped, mapped_version_id, reason, inclusion in rows.iterator(chunk_size=5000):
        _source, keys = answer_read_in(taxonomy_version_id, given_version_id=version_id, labels=labels,
                                       mapped_version_id=mapped_version_id, mapped_labels=mapped)
        if keys is None:  # mapped onto the version but not determinable there
            continue
        matched += 1
        per_item.setdefault(item_id, []).append([str(k) for k in (keys or [])])
        if reason in PROBABILITY_SAMPLE_REASONS and inclusion is not None and 0.0 < inclusion <= 1.0:
            sampled[item_id] = min(float(inclusion), sampled.get(item_id, 1.0))
    # Answers given under an older version that no label migration could map onto this one.
    unmapped = scope.count() - matched
    if unmapped:
        out.skipped["not_determinable"] = unmapped

    decided = dict(
        Adjudication.objects.filter(project_id=project_id, state=Adjudication.State.DECIDED,
                                    taxonomy_version_id=taxonomy_version_id, labels__isnull=False)
        .values_list("item_id", "labels")
    )
    for item_id in sorted(set(per_item) | set(decided)):
        # A decided adjudication is the answer; otherwise the reviewers vote.
        answers = [[str(k) for k in (decided[item_id] or [])]] if item_id in decided else per_item[item_id]
        label = _aggregate(answers, leaves, multi_label, out.skipped)
        if label is None:
            continue
        out.item_ids.append(item_id)
        out.labels.append(label)
        out.sampled.append(item_id in sampled)
        out.inclusion.append(sampled.get(item_id, 1.0))
    return out


def _aggregate(answers: list[list[str]], leaves: set[str], multi_label: bool, skipped: Counter[str]) -> Any:
    if multi_label:
        votes: Counter[str] = Counter()
        for keys in answers:
            votes.update({k for k in keys if k in leaves})
        # A key is on when more than half of the answers have it (an empty answer votes "none of these").
        return frozenset(k for k, n in votes.items() if 2 * n > len(answers))
    single: Counter[str] = Counter()
    for keys in answers:
        leaf = [k for k in keys if k in leaves]
        if len(keys) != 1 or not leaf:
            skipped["not_a_single_leaf"] += 1
            continue
        single[leaf[0]] += 1
    if not single:
        return None
    ranked = single.most_common(2)
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        skipped["tie"] += 1
        return None
    return ranked[0][0]
