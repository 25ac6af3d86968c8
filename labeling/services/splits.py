"""Train / validation / test splits that are stratified, seeded, and never move.

The invariants
--------------
1. **An item never changes split.** ``Item.split`` is written once, by ``splits_persist``, with
   ``UPDATE ... WHERE split IS NULL``; nothing else in Sift writes it. A later export with other
   fractions or another seed only decides the items that have no split yet.
2. **Near-duplicates never straddle.** Items with the same ``content_hash`` form a group and a group
   gets one split. A new item whose hash already has a split (in this export, or anywhere in the
   project) inherits it. Assignments for one project are serialised (a PostgreSQL advisory lock; on
   SQLite the IMMEDIATE write transaction), so two concurrent exports cannot put two new copies of
   the same text into different splits.
3. **Deterministic.** The same database state, fractions and seed give the same assignment.

How new groups are assigned, and the trade-off
----------------------------------------------
The stratum of a group is the aggregated label set of its first item (lowest id) in the export
(``""`` for items without a hard label; multi-label answers form one stratum per label combination).

*Option A, hash only:* ``u = H(seed, content_hash)`` uniform in [0, 1), split by cumulative
fractions. Order-free and trivially stable, but the label plays no part: it is stratified only in
expectation, and a stratum of 30 items can easily end up with 0 test items (binomial noise ~ sqrt(n)).

*Option B, per-stratum counters (what we do):* within each stratum, new groups are taken in the
order of ``u = H(seed, content_hash)`` and each goes to the split with the largest deficit
``fraction[s] * (n + size) - count[s]``, where the counts include the items already assigned in
earlier exports. Every stratum then holds its fractions to within one group, now and after every
later export with the same fractions, and the seeded hash order makes *which* items land in the
small splits a pseudo-random choice. The price: an item's split depends on which items of its
stratum existed when it was first exported (not only on its own hash), so the same item can get a
different split in two independent projects; within one project it is fixed forever, which is the
property training pipelines rely on. Ties between deficits go to the earlier split (train, then
validation, then test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from django.db import connection

from labeling.models import Item
from labeling.services.errors import ValidationFailed

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
SPLIT_INDEX = {name: i for i, name in enumerate(SPLIT_NAMES)}
NO_SPLIT = -1
# Arbitrary constant naming "export split assignment" in pg_advisory_xact_lock(class, project).
_LOCK_CLASS = 0x51F7
_CHUNK = 2000
_SCAN_CHUNK = 20_000
_UPDATE_CHUNK = 50_000



def split_fractions_parse(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); three non-negative numbers that sum to 1."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ValidationFailed("split: give three fractions for train,validation,test, e.g. 0.8,0.1,0.1",
                               field="split")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise ValidationFailed(f"split: {text!r} is not three numbers", field="split") from exc
    if any(not np.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValidationFailed(f"split: fractions must be >= 0 and sum to 1, got {text!r}", field="split")
    return values[0], values[1], values[2]


def uniform_key(seed: int, content_hash: str) -> float:
    """A seeded, uniform number in [0, 1) for a content hash: the order new groups are assigned in."""
    digest = hashlib.blake2b(f"{seed}:{content_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def splits_assign(*, stratum: npt.ArrayLike, group: npt.ArrayLike, existing: npt.ArrayLike,
                  group_u: npt.ArrayLike, group_inherited: npt.ArrayLike,
                  fractions: tuple[float, float, float]) -> npt.NDArray[np.int8]:
    """The split (0, 1, 2) of every item; pure, deterministic, numpy in and out (~30 bytes per item).

    Items are given in id order. ``group[i]`` is a dense group index (same content hash, same group);
    ``existing[i]`` the split already stored (or -1); ``group_inherited[g]`` a split held by an item of
    group g *outside* these items (or -1); ``group_u[g]`` the seeded uniform key of the group.
    Already-assigned items keep their split; a group with any assigned member gives that split to
    its new members (the most common one, ties to the earlier split, if old data disagrees); new
    groups go by per-stratum deficits in ``u`` order (module docstring).
    """
    strata = np.asarray(stratum, dtype=np.int64)
    groups = np.asarray(group, dtype=np.int64)
    result = np.asarray(existing, dtype=np.int8).copy()
    u = np.asarray(group_u, dtype=np.float64)
    inherited = np.asarray(group_inherited, dtype=np.int8)
    n, n_groups = len(strata), len(u)
    if n == 0:
        return result
    # Which split each group is already committed to: its members' most common split (argmax takes
    # the earlier split on ties), else a split held outside these items.
    assigned = result >= 0
    votes = np.bincount(groups[assigned] * 3 + result[assigned], minlength=3 * n_groups).reshape(n_groups, 3)
    forced = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), inherited).astype(np.int8)
    follow = ~assigned & (forced[groups] >= 0)
    result[follow] = forced[groups[follow]]
    n_strata = int(strata.max()) + 1
    done = result >= 0
    counts = np.bincount(strata[done] * 3 + result[done], minlength=3 * n_strata).reshape(n_strata, 3).tolist()
    # New groups: their members (in id order), the first member's stratum, their size.
    open_items = np.flatnonzero(~done)
    if len(open_items) == 0:
        return result
    open_groups = groups[open_items]
    new_groups, first = np.unique(open_groups, return_index=True)
    rep_stratum = strata[open_items[first]]
    sizes = np.bincount(open_groups, minlength=n_groups)[new_groups]
    members = open_items[np.argsort(open_groups, kind="stable")]  # grouped, groups ascending like new_groups
    starts = np.concatenate(([0], np.cumsum(sizes)))
    f0, f1, f2 = fractions
    choice = np.empty(len(new_groups), dtype=np.int8)
    rep_list, size_list = rep_stratum.tolist(), sizes.tolist()
    for j in np.lexsort((new_groups, u[new_groups], rep_stratum)).tolist():
        c = counts[rep_list[j]]
        size = size_list[j]
        total = c[0] + c[1] + c[2] + size
        best, chosen = f0 * total - c[0], 0
        d1 = f1 * total - c[1]
        if d1 > best:
            best, chosen = d1, 1
        if f2 * total - c[2] > best:
            chosen = 2
        choice[j] = chosen
        if size == 1:
            c[chosen] += 1
        else:
            for i in members[starts[j]:starts[j + 1]].tolist():
                counts[int(strata[i])][chosen] += 1
    result[members] = np.repeat(choice, sizes)
    return result


def splits_lock(*, project_id: int) -> None:
    """Serialise split assignment for one project; call inside the assigning transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, project_id])
    # SQLite: the transaction is IMMEDIATE (config/settings.py), i.e. already holds the write lock.


def splits_inherited(*, project_id: int, content_hashes: Iterable[str]) -> dict[str, int]:
    """Splits already held by any item of the project with one of these hashes (lowest item id wins).

    Reads whichever side is smaller: the project's items that hold a split (one ordered scan; on a
    first export there are none), or the asked hashes in batches (a later export asks about few).
    """
    wanted = list(content_hashes)
    found: dict[str, int] = {}
    if not wanted:
        return found
    held = Item.objects.filter(project_id=project_id, split__isnull=False)

    def take(rows: Iterable[tuple[str, str]], only: set[str] | None = None) -> None:
        for content_hash, split in rows:
            if (only is None or content_hash in only) and content_hash not in found and split in SPLIT_INDEX:
                found[content_hash] = SPLIT_INDEX[split]

    if held.count() <= len(wanted):
        take(held.order_by("id").values_list("content_hash", "split").iterator(chunk_size=_SCAN_CHUNK), set(wanted))
        return found
    for start in range(0, len(wanted), _CHUNK):
        take(held.filter(content_hash__in=wanted[start:start + _CHUNK]).order_by("id")
             .values_list("content_hash", "split"))
    return found


def splits_persist(*, project_id: int, item_ids: npt.ArrayLike, splits: npt.ArrayLike) -> dict[str, int]:
    """Store new assignments; rows that already have a split are never touched. Returns counts written.

    On PostgreSQL one ``UPDATE ... WHERE id = ANY(array)`` per split and ``_UPDATE_CHUNK`` ids: an
    ``IN (...)`` list of thousands of placeholders cost more to build and parse than the update itself.
    """
    ids_all = np.asarray(item_ids, dtype=np.int64)
    split_all = np.asarray(splits)
    written = {name: 0 for name in SPLIT_NAMES}
    table = Item._meta.db_table
    for s, name in enumerate(SPLIT_NAMES):
        ids = ids_all[split_all == s]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for start in range(0, len(ids), _UPDATE_CHUNK):
                    cursor.execute(
                        f"UPDATE {table} SET split = %s WHERE id = ANY(%s) AND project_id = %s "  # noqa: S608
                        "AND split IS NULL", [name, ids[start:start + _UPDATE_CHUNK].tolist(), project_id])
                    written[name] += cursor.rowcount
            continue
        for start in range(0, len(ids), _CHUNK):
            written[name] += Item.objects.filter(
                project_id=project_id, id__in=ids[start:start + _CHUNK].tolist(), split__isnull=True,
            ).update(split=name)
    return written
