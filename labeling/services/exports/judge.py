"""Judging an export's rows: the per-export memo tables, majority vote, Dawid-Skene posteriors and splits.

Each distinct aggregate key is judged once per export (``_memo``) and every later row costs a dict lookup.
``_judged`` turns aggregate chunks into ``_Batch`` columns the writers consume; ``_assign_splits`` gives newly
exported items their split in a short locked transaction (splits.py) before the read starts.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import transaction

from labeling.services import splits as splits_service
from labeling.services.aggregation import (
    DawidSkeneFit,
    dawid_skene,
    dawid_skene_multilabel,
    decide,
    majority_soft,
)
from labeling.services.audit import Actor, audit_record
from labeling.services.exports.params import PENDING_ADJUDICATION, ROUND
from labeling.services.exports.read import (
    _G_ADJ,
    _G_FIRST,
    _G_GOLD,
    _G_GOLD_LABELS,
    _G_HASH,
    _G_ID,
    _G_LAST,
    _G_LINEAGE,
    _G_PROPAGATED,
    _G_REVIEWERS,
    _G_SPLIT,
    _G_VERSIONS,
    _G_VOTES,
    _JSON_CACHE_MAX,
    _SEP,
    PreparedExport,
    _aggregates,
    _hash_bytes,
    _no_jit,
    _Stats,
)

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
           posterior: Sequence[float] | np.ndarray | None, *, propagated: bool = False) -> _Judgement:
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
        elif propagated:
            source = "propagated"  # the aggregate of propagated answers only: say so (LABEL_SOURCES)
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
            propagated = bool(row[_G_PROPAGATED])
            key = ((row[_G_VOTES], row[_G_ADJ], propagated) if post is None
                   else (row[_G_VOTES], row[_G_ADJ], propagated, post.tobytes()))
            judgement = memo.get(key)
            if judgement is None:
                judgement = _judge(prepared, row[_G_VOTES], row[_G_ADJ], post, propagated=propagated)
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
