"""The reviewer queue: which item a reviewer gets next, and the claim that keeps overlap exact.

The invariant
-------------
For every item, at every moment::

    n_done + holding <= n_required

where ``holding`` counts the item's leases that are ACTIVE and unexpired. So no item is ever in front of more
reviewers than it still needs, and (with the reviewer exclusions below) no reviewer sees an item twice. Every
write that can *raise* the left-hand side (a claim here, a renewal, an undo) happens while the writer holds the
item's row lock and re-reads the counts in a statement issued *after* the lock was granted. A submit moves one
unit from ``holding`` to ``n_done`` under the same lock, so the sum is unchanged. Skips and expiry only lower it,
so they need no lock; an expired lease simply stops counting the instant it expires, which is how abandoned
items return to the queue lazily, with no cron and no sweeper (``Lease.objects.holding()``).

Why a lock alone is not enough (PostgreSQL)
-------------------------------------------
The candidate scan is one statement with ``FOR NO KEY UPDATE OF item SKIP LOCKED``. Under READ COMMITTED that
statement reads from a snapshot taken when it *started*. Suppose reviewer B claims item X (B locks X, inserts
its lease, commits) while A's scan is already running. A's scan reaches X after B committed, so X is no longer
locked and A gets the lock, and PostgreSQL's re-check of the locked row sees nothing new (B did not update the
item row; it inserted a lease row). But the scan's "how many leases hold X?" sub-query was evaluated against
A's old snapshot, which does not contain B's lease. Trusting it would put X in front of one reviewer too many.
So after the lock is granted we ask again in a NEW statement (``CLAIM_SQL``, an ``INSERT ... SELECT`` whose WHERE
is the re-check, so asking and claiming cost one round trip): READ COMMITTED gives each statement a fresh
snapshot, which now includes every claim committed before we got the lock, and any later claimer must wait for
(or, with SKIP LOCKED, skip) our lock. Claims on one item are thereby serialised and each sees all the ones
before it. If the re-check fails, the INSERT inserts nothing and we move on to the next candidate.

SQLite
------
SQLite has one writer at a time. Settings open every transaction with ``BEGIN IMMEDIATE``, so the whole
checkout runs while holding the database's write lock from its first statement: nobody can commit a lease in
between our scan and our insert. ``select_for_update`` is a no-op there and SKIP LOCKED does not exist, so the
same code runs without the locking clause; the re-check is then redundant but harmless. Both backends share
one code path; only the locking suffix differs (``_lock_suffix``).

A reviewer holds at most one lease per project
----------------------------------------------
Checkout first locks the caller's ``Membership`` row, then looks for a lease they already hold and returns it
(a page refresh, or a second tab, gets the same item back). The membership lock serialises one reviewer's own
checkouts, so two tabs cannot both miss the existing lease and claim two items. Lock order everywhere is
membership -> item -> lease, so these locks cannot deadlock.

Candidate order (also in queues.md)
-----------------------------------
1. boosted open items (``Item.boost > 0``), by ``-boost, id`` (re-queued after a taxonomy change, or matched by a
   known-violating match bank: reason ``bank_match``);
2. at the project's gold rate, a gold item the reviewer has not seen (labeling/services/gold.py);
3. the active ranking: ``RankingEntry`` rows of ``(project, Project.active_ranking_version)`` by ``rank``;
4. fallback, when there is no active ranking or it has nothing left for this reviewer: open items by
   ``Item.random_key``, a uniform random permutation, recorded as ``fallback_random`` with inclusion
   probability 1/N (N: the open pool at that moment).
In every stage an item is skipped when it is finished, fully held by others, or this reviewer already has a
submitted/skipped lease, an unexpired active lease, or an annotation on it.

The rank floor (why the ranking walk stays O(1) at 1M items)
-----------------------------------------------------------
A ranking is written once and consumed from the top, so between retrains its head fills up with finished items
that every walk would step over again. We remember, per (project, ranking version), the first rank whose item
was still open (the cache key ``_floor_key``, refreshed at most every ``RANK_FLOOR_REFRESH`` seconds) and start
walks there. Only *finished* items are ever stepped over, and an item only stops being finished through
``annotation_undo``, which forgets the floor. The floor is a hint: it expires after ``RANK_FLOOR_TTL`` seconds,
and an item that reopened below it anyway (another area changing ``n_required``) is still served, by the
fallback stage, which walks all open items.

Keep the transaction short: everything slow (model scoring, rankings) happens elsewhere; checkout does a few
index probes, one INSERT, and no audit row (it is the hottest path; submits, skips and undos are audited). The
usual checkout is five statements: the membership lock, the held-lease probe, one scan, the claim, COMMIT; each
is plain SQL, so no ORM query is compiled per request.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from labeling.models import (
    Annotation,
    BankMatch,
    ClusterMember,
    Item,
    ItemCount,
    Lease,
    Membership,
    Project,
    RankingEntry,
    SelectionReason,
)
from labeling.services.errors import Conflict, PermissionDenied
from labeling.services.gold import gold_pick
from labeling.services.propagation import propagation_suggestion
from labeling.services.reviewer_languages import (
    FALLBACK_LANGUAGE_SHAPE,
    MEMBERSHIP_LANGUAGES_LOCK_SQL,
    OPEN_IN_LANGUAGES_SQL,
    RANKED_LANGUAGE_WINDOW,
    language_passes,
)
from labeling.services.wellness import severe_avoider

# Candidates locked per scan. Small: every extra row we lock is one the other reviewers must skip past.
CLAIM_BATCH = 3
# Re-scans per stage after lost races before moving on; each round sees a newer snapshot, so this is rarely hit.
MAX_SCAN_ROUNDS = 25
RANK_FLOOR_TTL = 300
RANK_FLOOR_REFRESH = 2

logger = logging.getLogger(__name__)
_system_random = random.SystemRandom()


@functools.cache
def _tables() -> dict[str, str]:
    return {
        "item": Item._meta.db_table,
        "lease": Lease._meta.db_table,
        "ranking": RankingEntry._meta.db_table,
        "annotation": Annotation._meta.db_table,
        "membership": Membership._meta.db_table,
        "cluster": ClusterMember._meta.db_table,
        "bank_match": BankMatch._meta.db_table,
    }


# "Still needs a reviewer, and not this one": shared by every stage's scan, for item alias ``i``.
# Gold items never come through these scans: they are mixed in at the project's gold_rate by gold_pick.
# Index use on PostgreSQL: ``mine`` probes lease_reviewer_item (reviewer_id, item_id); ``done`` probes the unique
# (item_id, reviewer_id) index of annotations; ``held`` probes the partial index lease_item_active.
# ``done.reviewer_id + 0``: the same test, spelled so that it is not an index condition, so the answers are probed by
# item (the unique (item_id, reviewer_id) index, or the item's own index): a handful of rows. As a plain index
# condition it let a planner that believed the table small walk every answer the reviewer ever gave, per candidate.
def _not_this_reviewers(item: str) -> str:
    """"Not this reviewer's": the item (column ``item``) has no submitted or skipped lease of ``%(reviewer)s``, no
    unexpired active one, and no annotation of theirs. The one spelling of the rule, used by every scan below, the
    lease INSERT and the retry-after query (a template: ``{lease}``/``{annotation}`` are filled by ``_tables``)."""
    return f"""NOT EXISTS (
        SELECT 1 FROM {{lease}} mine
        WHERE mine.reviewer_id = %(reviewer)s AND mine.item_id = {item}
          AND (mine.state IN ('submitted', 'skipped') OR (mine.state = 'active' AND mine.expires_at > %(now)s)))
    AND NOT EXISTS (
        SELECT 1 FROM {{annotation}} done WHERE done.item_id = {item} AND done.reviewer_id + 0 = %(reviewer)s)"""  # noqa: S608 - constants


_AVAILABLE = """
    i.n_done < i.n_required
    AND NOT i.is_gold
    AND """ + _not_this_reviewers("i.id") + """
    AND (SELECT COUNT(*) FROM {lease} held
         WHERE held.item_id = i.id AND held.state = 'active' AND held.expires_at > %(now)s)
        < i.n_required - i.n_done
    AND NOT EXISTS (
        SELECT 1 FROM {cluster} cm JOIN {item} rep ON rep.id = cm.representative_id
        WHERE cm.item_id = i.id AND cm.representative_id <> i.id AND rep.n_done < rep.n_required)
"""  # noqa: S608 - constant fragments only; every value is a query parameter
# The last clause: one item per near-duplicate cluster. A member waits while its representative is open (unanswered
# or held), so a campaign of ten thousand copies is served once, and its members only after it is answered. Two
# primary-key probes per candidate (its cluster row, then its representative); an unclustered item costs one.

# Stage 1. The WHERE implies the predicate of the partial index item_open_boosted (project, -boost, id).
BOOST_SCAN_SQL = """
SELECT i.id, i.external_id, i.text, i.meta,
       EXISTS (SELECT 1 FROM {bank_match} bm WHERE bm.item_id = i.id AND bm.withdrawn_at IS NULL) AS banked
FROM {item} i
WHERE i.project_id = %(project)s AND i.boost > 0 AND """ + _AVAILABLE + """ {rejected}{languages}
ORDER BY i.boost DESC, i.id
LIMIT %(batch)s {lock}
"""  # noqa: S608 - table names are constants

# Stage 2. Walks the unique (project_id, ranking_version, rank) index in order from the floor; LIMIT stops it early.
# Each ranked row's item is fetched by primary key in a LATERAL subquery that also takes the row lock. That shape is
# fixed whatever the statistics say: a subquery with a locking clause is never flattened into a join, so the only
# plan is a nested loop driven by the ranking index, one primary-key probe per ranked row. (Spelled as a join, the
# planner was free to drive from the items instead: with ``i.n_done < i.n_required`` matching the partial index
# item_open_random, it scanned every open item of the project per checkout, 11.7 s at 2,000 items without
# statistics and 3.8 s at 100k items after ANALYZE, while holding the scan's row locks;
# tests/labeling/services/test_queue_plans.py.) ``i.project_id + 0`` keeps the project check from matching an index key.
RANKING_SCAN_SQL = """
SELECT c.id, c.external_id, c.text, c.meta,
       r.rank, r.score, r.reason, r.inclusion_probability, r.suggested_label, r.suggested_confidence
FROM {ranking} r
CROSS JOIN LATERAL (
    SELECT i.id, i.external_id, i.text, i.meta FROM {item} i
    WHERE i.id = r.item_id AND i.project_id + 0 = %(project)s AND """ + _AVAILABLE + """ {rejected}{languages}
    {lock}
) c
WHERE r.project_id = %(project)s AND r.ranking_version = %(version)s AND r.rank >= %(floor)s{window}
ORDER BY r.rank
LIMIT %(batch)s
"""  # noqa: S608 (table names and our own fragments, no user input)

# SQLite has no LATERAL: there, the same two walks as plain joins (its planner drives them from the ranking's index
# anyway, and a demo-sized pool makes any plan cheap). render_sql picks the spelling for the database.
_PORTABLE = {
    RANKING_SCAN_SQL: """
SELECT i.id, i.external_id, i.text, i.meta,
       r.rank, r.score, r.reason, r.inclusion_probability, r.suggested_label, r.suggested_confidence
FROM {ranking} r JOIN {item} i ON i.id = r.item_id
WHERE r.project_id = %(project)s AND r.ranking_version = %(version)s AND r.rank >= %(floor)s{window}
  AND i.project_id + 0 = %(project)s AND """ + _AVAILABLE + """ {rejected}{languages}
ORDER BY r.rank
LIMIT %(batch)s {lock}
""",
}

# Stage 3. The WHERE implies the predicate of the partial index item_open_random (project, random_key).
FALLBACK_SCAN_SQL = """
SELECT i.id, i.external_id, i.text, i.meta FROM {item} i
WHERE i.project_id = %(project)s AND """ + _AVAILABLE + """ {rejected}{languages}
ORDER BY i.random_key
LIMIT %(batch)s {lock}
"""
# Stage 3 of a pass limited to the reviewer's languages (labeling/services/reviewer_languages.py): a walk of
# item_open_language_random per language; on SQLite, the stage above with the language filter.
FALLBACK_LANGUAGE_SCAN_SQL = FALLBACK_LANGUAGE_SHAPE.replace("{available}", _AVAILABLE)
_PORTABLE[FALLBACK_LANGUAGE_SCAN_SQL] = FALLBACK_SCAN_SQL

# The first rank whose item is still open: where ranking walks start (see "The rank floor" above). The same fixed
# shape as the ranking scan: ``OFFSET 0`` keeps the LATERAL subquery from being flattened into a join the planner
# could drive from the items.
FIRST_OPEN_RANK_SQL = """
SELECT r.rank FROM {ranking} r
CROSS JOIN LATERAL (
    SELECT 1 FROM {item} i WHERE i.id = r.item_id AND i.n_done < i.n_required OFFSET 0
) c
WHERE r.project_id = %(project)s AND r.ranking_version = %(version)s AND r.rank >= %(floor)s
ORDER BY r.rank
LIMIT 1
"""
_PORTABLE[FIRST_OPEN_RANK_SQL] = """
SELECT r.rank FROM {ranking} r JOIN {item} i ON i.id = r.item_id
WHERE r.project_id = %(project)s AND r.ranking_version = %(version)s AND r.rank >= %(floor)s
  AND i.n_done < i.n_required
ORDER BY r.rank
LIMIT 1
"""

# The re-check and the claim in one statement, issued after the scan granted the row lock: a new statement has a
# fresh snapshot that sees every claim committed before ours, and the INSERT happens only if the item still fits.
# No row back means the candidate lost its race. (The page's fields came with the scan: the scan locked the row,
# and a locked row is returned in its latest version.)
CLAIM_SQL = """
INSERT INTO {lease} (project_id, item_id, reviewer_id, state, created_at, expires_at, renewals, taxonomy_version_id,
                     selection_reason, selection_score, model_version, inclusion_probability, suggestion,
                     suggestion_hidden)
SELECT i.project_id, i.id, %(reviewer)s, 'active', %(now)s, %(expires)s, 0, %(taxonomy_version)s,
       %(reason)s, %(score)s, %(model_version)s, %(inclusion)s, %(suggestion)s, %(hidden)s
FROM {item} i
WHERE i.id = %(item)s
  AND i.n_required - i.n_done > (
      SELECT COUNT(*) FROM {lease} held
      WHERE held.item_id = i.id AND held.state = 'active' AND held.expires_at > %(now)s)
  AND """ + _not_this_reviewers("i.id") + """
RETURNING id
"""  # noqa: S608 - constant fragments only; every value is a query parameter

# Serialises one reviewer's own checkouts (two tabs), and only theirs. Plain SQL: this runs on every checkout and
# the ORM would compile the same query each time.
#
# On PostgreSQL it also sets the planner up for the rest of the checkout transaction (set_config(..., true) is
# SET LOCAL; folded in here to cost no extra round trip): see PLANNER_OFF. Every checkout
# statement is meant to walk one index in order and stop after a few rows, and to answer each availability
# question (held, mine, done) with an index probe. What the planner believes about a table is often wrong here:
# a new project, a bulk import before ANALYZE, a lease table analysed while it was empty. On such guesses it
# preferred a bitmap scan of the project's open items plus a sort, or a sequential scan of the leases per
# candidate: O(pool) or O(leases) where the walk is O(1). With both off, the only plans left are the index walks
# (a Seq Scan is still possible as a last resort, with no index at all, which never happens on these tables).
# tests/labeling/services/test_queue_plans.py checks the plans in every database state users meet.
MEMBERSHIP_LOCK_SQL = """
SELECT {planner_settings} FROM {membership} m
WHERE m.project_id = %(project)s AND m.user_id = %(reviewer)s {membership_lock}
"""
# The same settings on their own, for the queue's reads that run outside a checkout (the rank floor, the empty
# path's "ask again?" questions): run inside a short transaction so SET LOCAL applies (``_fetch_planned``).
PLANNER_SETTINGS_SQL = "SELECT {planner_settings}"


def _lock_suffix() -> str:
    # NO KEY UPDATE rather than UPDATE: it excludes other claimers and submitters just the same, but lets
    # foreign-key checks (FOR KEY SHARE, e.g. the learning side inserting ranking rows) pass without waiting.
    if connection.vendor == "postgresql":
        return "FOR NO KEY UPDATE OF i SKIP LOCKED"
    return ""


def _membership_lock() -> str:
    return "FOR NO KEY UPDATE" if connection.vendor == "postgresql" else ""


# The plan shapes the queue's statements may not take, whatever the statistics say (see MEMBERSHIP_LOCK_SQL): a scan
# of a whole table or of many index entries (sequential, bitmap), and a hash or merge join or a materialised inner
# side, each of which reads one side in full (e.g. every lease the reviewer ever held, once per checkout) instead
# of probing it per candidate.
PLANNER_OFF = ("enable_bitmapscan", "enable_seqscan", "enable_hashjoin", "enable_mergejoin", "enable_material")


def queue_planner_settings() -> str:
    """The select-list expression that sets the queue's planner up for the rest of the transaction (see
    MEMBERSHIP_LOCK_SQL); the submit folds it into its first statement. "1" where there is no such thing."""
    return _planner_settings()


def _planner_settings() -> str:
    if connection.vendor != "postgresql":
        return "1"
    return ", ".join(f"set_config('{name}', 'off', true)" for name in PLANNER_OFF)


def render_sql(template: str, *, rejected: Sequence[int] = (),
               languages: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Fill in table names, the exclusion list of already-rejected candidates, the locking clause and, for a pass
    limited to ``languages`` (reviewer_languages.py), the language filter and the ranked walk's window. Without
    ``languages`` every statement is exactly what it was before reviewer languages existed.

    Public so that bench/queue_latency.py replays exactly these statements as its raw-SQL floor.
    """
    if connection.vendor != "postgresql":
        template = _PORTABLE.get(template, template)
    names: dict[str, Any] = {f"rejected_{n}": item_id for n, item_id in enumerate(rejected)}
    clause = ("AND i.id NOT IN (" + ", ".join(f"%({name})s" for name in names) + ")") if names else ""
    language_names = {f"language_{n}": code for n, code in enumerate(languages or ())}
    names.update(language_names)
    in_languages = ", ".join(f"%({name})s" for name in language_names)
    return template.format(rejected=clause, lock=_lock_suffix(), membership_lock=_membership_lock(),
                           planner_settings=_planner_settings(),
                           languages=f" AND COALESCE(i.language, '') IN ({in_languages})" if language_names else "",
                           language_rows=", ".join(f"(%({name})s)" for name in language_names),
                           window=" AND r.rank < %(floor)s + %(window)s" if language_names else "",
                           **_tables()), names


def _fetch(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _fetch_planned(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``_fetch`` with the checkout's planner settings (see MEMBERSHIP_LOCK_SQL), for reads outside a checkout."""
    if connection.vendor != "postgresql":
        return _fetch(sql, params)
    settings_sql, _ = render_sql(PLANNER_SETTINGS_SQL)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(settings_sql)
        cursor.execute(sql, params)
        return list(cursor.fetchall())


@dataclass(frozen=True, slots=True)
class _Pick:
    """A candidate and the selection facts a lease on it will record."""

    item_id: int
    reason: str
    score: float | None = None
    model_version: int | None = None
    inclusion_probability: float | None = None
    suggested_label: str = ""
    suggested_confidence: float | None = None


def _floor_key(project: Project, version: int) -> str:
    # created_at disambiguates a reused primary key (a restored database, SQLite test runs).
    return f"sift:queue:rank-floor:{project.pk}:{project.created_at.timestamp():.6f}:{version}"


def queue_rank_floor_reset(*, project: Project) -> None:
    """Forget where the active ranking's open items start. Call after anything that reopens a finished item."""
    if project.active_ranking_version is not None:
        key = _floor_key(project, project.active_ranking_version)
        try:
            cache.delete_many([key, key + ":fresh"])
        except Exception:
            logger.warning("queue rank floor: cache unavailable; floor not reset", exc_info=True)


# The cached floor is an int (the cache stores ints natively, nothing is pickled): a rank r >= 0 means "open items
# may start at r"; -(r + 1) means "everything ranked is finished; the walk would start at r".
def _decode_floor(value: int) -> tuple[int, bool]:
    return (-value - 1, True) if value < 0 else (value, False)


def _rank_floor(project: Project, version: int) -> int | None:
    """Where this checkout's ranking walk starts, or None when every ranked item is finished.

    A hint, read inside the checkout transaction but locking nothing. The first-open-rank query runs at most every
    ``RANK_FLOOR_REFRESH`` seconds per project (the ``:fresh`` marker); in between, walks start at the cached floor
    and step over the few items finished since, which the scan filters out anyway.
    """
    key, fresh_key = _floor_key(project, version), _floor_key(project, version) + ":fresh"
    try:
        cached = cache.get_many([key, fresh_key])
    except Exception:
        logger.warning("queue rank floor: cache unavailable; walking the ranking from its top", exc_info=True)
        cached = {}
    known, exhausted = _decode_floor(int(cached.get(key, 0)))
    if fresh_key in cached:
        return None if exhausted else known
    sql, _ = render_sql(FIRST_OPEN_RANK_SQL)
    rows = _fetch(sql, {"project": project.pk, "version": version, "floor": known})
    if rows:
        floor: int | None = int(rows[0][0])
        value = int(rows[0][0])
    else:
        # Everything from the floor on is finished: park the floor past the last rank.
        last = (RankingEntry.objects.filter(project_id=project.pk, ranking_version=version)
                .order_by("-rank").values_list("rank", flat=True).first())
        floor, value = None, -(max(known, (last or 0) + 1) + 1)
    try:
        cache.set(key, value, RANK_FLOOR_TTL)
        cache.set(fresh_key, 1, RANK_FLOOR_REFRESH)
    except Exception:
        logger.warning("queue rank floor: cache unavailable; floor not saved", exc_info=True)
    return floor


class _Scanner:
    """Runs one checkout's stages inside its transaction, remembering candidates that lost their race."""

    def __init__(self, *, project: Project, reviewer_id: int, rng: random.Random,
                 avoid: Callable[[int, str], bool] | None = None) -> None:
        self.project = project
        self.reviewer_id = reviewer_id
        self.rng = rng
        self.rejected: list[int] = []
        # Wellness (labeling/services/wellness.py): once a reviewer's daily severe budget is spent, candidates known
        # or predicted severe are passed over for them (left open for others), as if they had lost their race.
        self.avoid = avoid
        # The pass's language codes (reviewer_languages.py), or None: every language.
        self.languages: tuple[str, ...] | None = None

    def _params(self, now: datetime) -> dict[str, Any]:
        return {
            "project": self.project.pk,
            "reviewer": self.reviewer_id,
            "now": connection.ops.adapt_datetimefield_value(now),
            "batch": CLAIM_BATCH,
        }

    def _stage(self, template: str, extra: dict[str, Any], to_pick: Any) -> Lease | None:
        for _ in range(MAX_SCAN_ROUNDS):
            sql, names = render_sql(template, rejected=self.rejected, languages=self.languages)
            rows = _fetch(sql, {**self._params(timezone.now()), **extra, **names})
            if not rows:
                return None
            for row in rows:
                # Every scan starts with the page's fields: id, external_id, text, meta.
                pick: _Pick = to_pick(row)
                if self.avoid is not None and self.avoid(pick.item_id, pick.suggested_label):
                    self.rejected.append(pick.item_id)
                    continue
                lease = _lease_claim(project=self.project, reviewer_id=self.reviewer_id, pick=pick, rng=self.rng)
                if lease is not None:
                    lease.item = _page_item(self.project, row)
                    return lease
                self.rejected.append(pick.item_id)
        return None

    def boosted(self) -> Lease | None:
        # Boosted because of a live match-bank match (labeling/services/banks.py), or re-queued by a taxonomy change.
        return self._stage(BOOST_SCAN_SQL, {}, lambda row: _Pick(
            item_id=row[0], reason=SelectionReason.BANK_MATCH if row[4] else SelectionReason.RELABEL))

    def ranked(self) -> Lease | None:
        version = self.project.active_ranking_version
        # Read here, inside the checkout transaction, so its look-up runs under the checkout's planner settings,
        # and only by checkouts that get this far (not those served a held lease, a boosted item or gold).
        floor = _rank_floor(self.project, version) if version is not None else None
        if version is None or floor is None:
            return None

        def to_pick(row: tuple[Any, ...]) -> _Pick:
            item_id, _ext, _text, _meta, _rank, score, reason, inclusion, label, confidence = row
            return _Pick(item_id=item_id, reason=reason, score=score, model_version=version,
                         inclusion_probability=inclusion, suggested_label=label or "",
                         suggested_confidence=confidence)

        window = {} if self.languages is None else {"window": RANKED_LANGUAGE_WINDOW}
        return self._stage(RANKING_SCAN_SQL, {"version": version, "floor": floor, **window}, to_pick)

    def fallback(self) -> Lease | None:
        inclusion: list[float] = []

        def to_pick(row: tuple[Any, ...]) -> _Pick:
            # The random order is a uniform permutation of the open pool, so this pick is one uniform draw from the
            # N items open now: its inclusion probability is 1/N, recorded so that answers given before the first
            # model still carry their sampling design (prevalence, weighted exports). Counted once per checkout,
            # and only when the stage has a candidate.
            if not inclusion:
                inclusion.append(1.0 / max(1, self._open_count()))
            return _Pick(item_id=row[0], reason=SelectionReason.FALLBACK_RANDOM, inclusion_probability=inclusion[0])

        return self._stage(FALLBACK_SCAN_SQL if self.languages is None else FALLBACK_LANGUAGE_SCAN_SQL, {}, to_pick)

    def _open_count(self) -> int:
        """N of the fallback's 1/N: the open pool, or in a language pass the open items of its languages (the
        draw is uniform among those; a count over item_open_language_random, paid once per such pick)."""
        if self.languages is None:
            counts = ItemCount.objects.counts([self.project.pk])[self.project.pk]
            return counts.pool - counts.pool_finished
        sql, names = render_sql(OPEN_IN_LANGUAGES_SQL, languages=self.languages)
        return int(_fetch(sql, {"project": self.project.pk, **names})[0][0])


def _page_item(project: Project, row: tuple[Any, ...]) -> Item:
    """The item as the page needs it, from a scan row; the rest stays deferred (loaded if ever touched), so gold
    fields are not even read on this path."""
    item_id, external_id, text, meta = row[:4]
    meta_field: Any = Item._meta.get_field("meta")
    return Item.from_db(connection.alias, ["id", "project_id", "external_id", "text", "meta"],
                        [item_id, project.pk, external_id, text, meta_field.from_db_value(meta, None, connection)])


def _suggestion_for(*, project: Project, pick: _Pick, rng: random.Random) -> tuple[dict[str, Any] | None, bool]:
    """The suggestion a lease on ``pick`` records, and whether it is held out."""
    # A cluster member whose representative's label is on a "suggest" policy is served with that label (labeling/
    # services/propagation.py); it takes the model's place, and the hold-out below applies to it alike.
    from_cluster = (propagation_suggestion(project_id=project.pk, item_id=pick.item_id)
                    if project.propagation_suggests else None)
    if from_cluster is not None:
        hidden = rng.random() < project.suggestion_holdout_rate
        return {"label": from_cluster[0], "confidence": from_cluster[1], "source": "cluster"}, hidden
    if not (pick.suggested_label and project.show_suggestions):
        return None, False
    # One independent draw per lease: a suggestion_holdout_rate share of suggestions is withheld on purpose
    # (and recorded) so automation bias can be measured against leases that showed one.
    # The withheld suggestion is still stored (with suggestion_hidden) so the stats can compare what the
    # reviewer chose against what the model would have said; the API and the annotation never show it.
    hidden = rng.random() < project.suggestion_holdout_rate
    return {"label": pick.suggested_label, "confidence": pick.suggested_confidence}, hidden


def _lease_fields(*, project: Project, reviewer_id: int, pick: _Pick, now: datetime,
                  rng: random.Random) -> dict[str, Any]:
    suggestion, hidden = _suggestion_for(project=project, pick=pick, rng=rng)
    return {
        "project_id": project.pk, "item_id": pick.item_id, "reviewer_id": reviewer_id, "state": Lease.State.ACTIVE,
        "created_at": now, "expires_at": now + timedelta(seconds=project.lease_seconds), "renewals": 0,
        "taxonomy_version_id": project.current_taxonomy_version_id, "selection_reason": pick.reason,
        "selection_score": pick.score, "model_version": pick.model_version,
        "inclusion_probability": pick.inclusion_probability, "suggestion": suggestion, "suggestion_hidden": hidden,
    }


def _lease_claim(*, project: Project, reviewer_id: int, pick: _Pick, rng: random.Random) -> Lease | None:
    """Re-check the locked candidate and lease it if it still fits, in one fresh statement (CLAIM_SQL)."""
    fields = _lease_fields(project=project, reviewer_id=reviewer_id, pick=pick, now=timezone.now(), rng=rng)
    suggestion_field: Any = Lease._meta.get_field("suggestion")
    adapt = connection.ops.adapt_datetimefield_value
    sql, _ = render_sql(CLAIM_SQL)
    rows = _fetch(sql, {
        "item": pick.item_id, "reviewer": reviewer_id, "now": adapt(fields["created_at"]),
        "expires": adapt(fields["expires_at"]), "taxonomy_version": fields["taxonomy_version_id"],
        "reason": pick.reason, "score": pick.score, "model_version": pick.model_version,
        "inclusion": pick.inclusion_probability, "hidden": fields["suggestion_hidden"],
        "suggestion": (None if fields["suggestion"] is None
                       else suggestion_field.get_db_prep_save(fields["suggestion"], connection)),
    })
    if not rows:
        return None
    lease = Lease(id=rows[0][0], **fields)
    lease._state.adding = False
    lease._state.db = connection.alias
    return lease


def _lease_create(*, project: Project, reviewer_id: int, pick: _Pick, now: datetime,
                  rng: random.Random) -> Lease:
    """A lease on an item already known to fit (the gold path decides that itself)."""
    return Lease.objects.create(**_lease_fields(project=project, reviewer_id=reviewer_id, pick=pick, now=now,
                                                rng=rng))


# One round trip for the two questions every checkout asks first: does the reviewer already hold a lease here
# (lease_active_expiry: the project's unexpired active leases), and is any boosted item open (item_open_boosted)?
# ``+ 0`` keeps the reviewer's all-time leases (lease_reviewer_item) and the whole primary key (for the ORDER BY) out
# of the plan: only the project's active leases are read, however long the reviewer's history.
HELD_AND_BOOSTED_SQL = """
SELECT
  (SELECT l.id FROM {lease} l
   WHERE l.project_id = %(project)s AND l.reviewer_id + 0 = %(reviewer)s AND l.state = 'active'
     AND l.expires_at > %(now)s
   ORDER BY l.id + 0 DESC LIMIT 1) AS held,
  CASE WHEN EXISTS (SELECT 1 FROM {item} i WHERE i.project_id = %(project)s AND i.boost > 0
                    AND i.n_done < i.n_required) THEN 1 ELSE 0 END AS boosted
"""


def _held_and_boosted(*, project: Project, reviewer_id: int) -> tuple[Lease | None, bool]:
    sql, _ = render_sql(HELD_AND_BOOSTED_SQL)
    held_id, boosted = _fetch(sql, {"project": project.pk, "reviewer": reviewer_id,
                                    "now": connection.ops.adapt_datetimefield_value(timezone.now())})[0]
    if held_id is None:
        return None, bool(boosted)
    return Lease.objects.select_related("item", "taxonomy_version").get(pk=held_id), bool(boosted)


def queue_checkout_next(*, project: Project, reviewer: AbstractBaseUser,
                        rng: random.Random | None = None) -> Lease | None:
    """Lease the next item for ``reviewer`` in ``project``, or return the lease they already hold.

    Returns None when nothing is left for this reviewer. The lease comes back with ``item`` loaded (only the
    fields the page shows). ``rng`` only decides the suggestion hold-out draw; tests pass a seeded one.
    """
    if project.current_taxonomy_version_id is None:
        raise Conflict("this project has no published taxonomy yet; publish one before labelling")
    reviewer_id: int = reviewer.pk
    scanner = _Scanner(project=project, reviewer_id=reviewer_id, rng=rng or _system_random,
                       avoid=severe_avoider(project=project, reviewer=reviewer))
    with transaction.atomic():
        # Serialises this reviewer's own checkouts (two tabs), and only theirs. With reviewer languages in use, the
        # same statement also reads the reviewer's languages; otherwise it is exactly the statement it always was.
        off = project.language_mode == Project.LanguageMode.OFF
        sql, _ = render_sql(MEMBERSHIP_LOCK_SQL if off else MEMBERSHIP_LANGUAGES_LOCK_SQL)
        locked = _fetch(sql, {"project": project.pk, "reviewer": reviewer_id})
        if not locked:
            raise PermissionDenied("you are not a member of this project")
        passes = [None] if off else language_passes(mode=project.language_mode, languages=_languages(locked[0][-1]))
        held, boosted = _held_and_boosted(project=project, reviewer_id=reviewer_id)
        if held is not None:
            return held
        # Re-queued items (a split or deprecation took their answer away) come first, before gold checks (which
        # wear an exploration or uncertainty disguise) and the ranking: the lead asked for them at a priority.
        # A pass limited to the reviewer's languages runs every stage filtered; "prefer" then runs an unfiltered
        # one (without gold) when the first served nothing (reviewer_languages.py).
        for n, languages in enumerate(passes):
            scanner.languages = languages
            lease = ((boosted and scanner.boosted())
                     or (n == 0 and _gold_lease(project=project, reviewer=reviewer, rng=scanner.rng,
                                                languages=languages))
                     or scanner.ranked() or scanner.fallback())
            if lease:
                return lease
        return None


def _languages(value: Any) -> list[str]:
    """Membership.languages as the raw membership lock hands it back (jsonb: a list; SQLite: its text)."""
    field: Any = Membership._meta.get_field("languages")
    decoded = field.from_db_value(value, None, connection) if isinstance(value, str) else value
    return [str(code) for code in decoded or []]


def _gold_lease(*, project: Project, reviewer: AbstractBaseUser, rng: random.Random,
                languages: Sequence[str] | None = None) -> Lease | None:
    """At the project's gold_rate, a gold item the reviewer has not seen, disguised as an ordinary pick."""
    gold = gold_pick(project=project, reviewer=reviewer, rng=rng, languages=languages)
    if gold is None:
        return None
    pick = _Pick(item_id=gold.item_id, reason=gold.reason, score=gold.score, model_version=gold.model_version,
                 inclusion_probability=gold.inclusion_probability, suggested_label=gold.suggested_label,
                 suggested_confidence=gold.suggested_confidence)
    lease = _lease_create(project=project, reviewer_id=reviewer.pk, pick=pick, now=timezone.now(), rng=rng)
    lease.item = Item.objects.only("id", "project_id", "external_id", "text", "meta").get(pk=gold.item_id)
    return lease


# Is any item open for this reviewer, whether or not some other transaction has its row locked this instant?
# The checkout's scans SKIP LOCKED rows, so an item only row-locked for a moment (another reviewer's checkout
# scanning past it, a submit, an import) is invisible to them; this look-up does not lock, so it sees it.
AVAILABLE_NOW_SQL = """
SELECT 1 FROM {item} i WHERE i.project_id = %(project)s AND """ + _AVAILABLE + """{languages}
LIMIT 1
"""


# When the first lease someone else holds on an item this reviewer could take runs out. Walks the project's unexpired
# active leases by expiry (the partial index lease_active_expiry), each checked by primary key and index probes.
EARLIEST_HELD_ELSEWHERE_SQL = """
SELECT MIN(l.expires_at) FROM {lease} l JOIN {item} i ON i.id = l.item_id
WHERE l.project_id = %(project)s AND l.state = 'active' AND l.expires_at > %(now)s AND l.reviewer_id <> %(reviewer)s
  AND NOT i.is_gold AND i.n_done < i.n_required
  AND """ + _not_this_reviewers("l.item_id") + """{languages}
"""


def queue_retry_after(*, project: Project, reviewer: AbstractBaseUser) -> int | None:
    """When checkout found nothing: seconds after which asking again may succeed, or None if never.

    Nothing may be left for this reviewer *now* while items they could still take are row-locked for a moment
    (1 s), or held by others' leases (a holder may skip, or let the lease expire, and the item comes back).
    Clients should stop only on a 204 without Retry-After. Only the empty path pays for these queries.
    """
    # With language_mode "only", only items in the reviewer's languages (and undetermined ones) can come back to
    # them: a Hindi reviewer with nothing but Arabic items left is done here, not told to ask again every second.
    languages = None
    if project.language_mode == Project.LanguageMode.ONLY:
        mine = Membership.objects.filter(project=project, user_id=reviewer.pk).values_list("languages", flat=True)
        languages = language_passes(mode=project.language_mode, languages=list(mine.first() or []))[0]
    sql, names = render_sql(AVAILABLE_NOW_SQL, languages=languages)
    now = timezone.now()
    adapted = connection.ops.adapt_datetimefield_value(now)
    if _fetch_planned(sql, {"project": project.pk, "reviewer": reviewer.pk, "now": adapted, **names}):
        return 1
    sql, names = render_sql(EARLIEST_HELD_ELSEWHERE_SQL, languages=languages)
    rows = _fetch_planned(sql, {"project": project.pk, "reviewer": reviewer.pk, "now": adapted, **names})
    earliest = rows[0][0] if rows else None
    if earliest is None:
        return None
    if isinstance(earliest, str):  # SQLite hands back the stored text
        earliest = datetime.fromisoformat(earliest)
    if timezone.is_naive(earliest):
        earliest = earliest.replace(tzinfo=UTC)
    # Holders usually finish well before expiry, so poll at most every 10 s rather than waiting it out.
    return max(1, min(10, int((earliest - now).total_seconds())))


# A lease this long past its expiry is closed by the periodic sweep (labeling/tasks.py). Long enough that a
# reviewer coming back to a stale tab still gets "lease expired at ...", not "already released".
RELEASE_AFTER_SECONDS = 3600
RELEASE_BATCH = 1000


def lease_release_expired(*, after_seconds: int = RELEASE_AFTER_SECONDS, batch_size: int = RELEASE_BATCH,
                          now: datetime | None = None) -> int:
    """Mark ACTIVE leases that expired more than ``after_seconds`` ago RELEASED; returns how many.

    Housekeeping, not correctness: an expired lease stopped holding its item the moment it expired (see the
    essay above), so closing it changes nothing a checkout, submit or the invariant sees. It keeps the partial
    indexes on active leases (lease_item_active, lease_active_expiry) down to the leases that are really held.
    Idempotent: a second run finds nothing left to close. Leases locked right now (a renew or submit in flight)
    are skipped and left for the next run; the UPDATE re-checks state and expiry, so a lease renewed meanwhile
    is never closed. Batched, so no transaction holds many row locks. Not audited: nobody acted.
    """
    moment = now or timezone.now()
    cutoff = moment - timedelta(seconds=after_seconds)
    released = 0
    while True:
        with transaction.atomic():
            # project__isnull=False: always true, and what lets this read the partial index lease_active_expiry.
            ids = list(Lease.objects.filter(state=Lease.State.ACTIVE, project__isnull=False, expires_at__lt=cutoff)
                       .select_for_update(skip_locked=True, no_key=True).order_by("id")
                       .values_list("id", flat=True)[:batch_size])
            if ids:
                released += Lease.objects.filter(pk__in=ids, state=Lease.State.ACTIVE, expires_at__lt=cutoff).update(
                    state=Lease.State.RELEASED, closed_at=moment)
        if len(ids) < batch_size:
            return released
