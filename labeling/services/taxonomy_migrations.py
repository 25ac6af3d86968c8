"""Label migrations between taxonomy versions: declaring, checking, previewing and applying them.

The invariants this module keeps
--------------------------------
1. ``Annotation.labels`` is never rewritten: it is what the reviewer said, under the version they said
   it in. A publish writes the answer *as seen by the new version* into ``mapped_labels`` and stamps
   ``mapped_taxonomy_version``. So after every publish, for every annotation of the project, exactly one
   of these holds, and readers (training sets, exports, agreement) use it:

   - ``taxonomy_version`` is the current version: the answer is ``labels``;
   - ``mapped_taxonomy_version`` is the current version: the answer is ``mapped_labels``, and
     ``mapped_labels is None`` means *not determinable* (a split or a deprecation took it away).

   ``labels_under_version`` below is that rule in code.

2. Nothing is ambiguous silently. Every key of the previous version either survives into the new one
   (identity), or is the source of exactly one declared migration. A key that disappears (or becomes
   deprecated) without one blocks the publish with a message naming it.

3. Determinable answers map; the rest re-queue. Rename (A -> B) and merge (A + B -> C) map each key to
   one target. Split (A -> B | C) and deprecate (A -> nothing) cannot be decided without a human: the
   annotation gets ``mapped_labels = None`` and its item is re-opened for one more annotation under
   the new version, at the priority the lead chose.

Re-labelling is done by a *different* reviewer
----------------------------------------------
The queue never hands a reviewer an item they already annotated (one annotation per (item, reviewer),
a database constraint), and we keep it that way: a relabel is an independent judgement under the new
guideline, not the same person asked to re-guess, and the constraint keeps submit races safe. So a
re-queued item gets ``n_required = max(n_required, n_done + 1)`` (exactly one more annotation is needed,
and the queue only serves the current version, so that annotation is under the new one) and
``boost = max(boost, requeue_priority)`` (the queue serves boosted open items before the ranking). The
preview counts the re-queued items that no current labeller of the project can take (everyone able to
label has already annotated them), so the lead sees that before publishing.

Multi-label answers map key by key; if any key is not determinable the whole answer is not (the
reviewer might have picked a different combination), so the item re-queues.

A publish never stalls reviewers, and never deadlocks with them (PostgreSQL)
----------------------------------------------------------------------------
The one race that matters: a submit on a lease taken under the old version inserts its answer while a
publish runs. Either the publish must see that answer, or the submit must see the new version (and map its
answer forward itself, ``annotation_map_forward``). Nothing else a reviewer does needs to wait for a publish:
a checkout records whatever version is current when it runs, and its submit maps forward later.

So the serialisation is narrow, and it is not a row lock: the *answer lock*, a per-project advisory lock
(``pg_advisory_xact_lock(ANSWER_LOCK_CLASS, project_id)``). A submit takes it SHARED as its first statement
(``answer_lock_shared_for_lease``), so submits never wait for each other; a publish takes it EXCLUSIVE only
for its last moments. The publish runs in three parts, in one transaction:

1. the project row FOR NO KEY UPDATE (serialises publishes and draft edits; it does not conflict with the
   FOR KEY SHARE that every lease and annotation INSERT takes through its foreign key, so checkouts and
   submits go on), then validation and the plan over every answer in its snapshot, then the bulk writes
   of ``mapped_labels``: all the slow work, while reviewers keep labelling;
2. the answer lock EXCLUSIVE: it waits for the submits in flight to commit, and queues every later one
   behind it (advisory locks queue fairly, so a stream of submits cannot starve the publish);
3. the catch-up: the answers committed since the plan's snapshot (``plan_build(unstamped_for=...)``, a few
   at most), the re-queue of items, and the switch of ``current_taxonomy_version``. Then COMMIT releases the
   lock, and the submits that queued read the new version in a fresh statement.

Deadlock freedom: a submit holds the answer lock before any row lock, and the publish requests it holding only
rows no submit ever waits for (the project row in NO KEY UPDATE mode, the draft's version row, existing answer
rows); the item rows a publish re-queues are locked only after it holds the answer lock, as every other lock
of a submit is. An undo deletes an existing answer, which part 1 may have locked, so an undo takes the project
row FOR SHARE first (``project_share_lock``) and waits out a running publish entirely, before it locks anything
else; undos are rare, and a publish's first lock is that same row. SQLite has one writer at a time
(BEGIN IMMEDIATE), so none of these locks exist there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from labeling.models import (
    ROLE_CAPABILITIES,
    Annotation,
    Capability,
    Item,
    Label,
    LabelMigration,
    Membership,
    Project,
    TaxonomyVersion,
)
from labeling.services.errors import ValidationFailed

MAX_MIGRATIONS = 500
MAX_REQUEUE_PRIORITY = 1000
SCAN_BATCH = 5000
UPDATE_BATCH = 1000

Kind = LabelMigration.Kind


@dataclass(frozen=True)
class MigrationSpec:
    kind: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    requeue_priority: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sources": list(self.sources), "targets": list(self.targets),
                "requeue_priority": self.requeue_priority}

    @property
    def requeues(self) -> bool:
        return self.kind in (Kind.SPLIT, Kind.DEPRECATE)


@dataclass(frozen=True)
class Problem:
    """Why a draft cannot be published yet: ``path`` names the bad node or migration."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": f"{self.path}: {self.message}"}


# (min, max) numbers of sources and targets per kind; None = no upper bound.
ARITY: dict[str, tuple[tuple[int, int | None], tuple[int, int | None]]] = {
    Kind.RENAME: ((1, 1), (1, 1)),
    Kind.MERGE: ((2, None), (1, 1)),
    Kind.SPLIT: ((1, 1), (2, None)),
    Kind.DEPRECATE: ((1, None), (0, 0)),
}
ARITY_TEXT = {
    Kind.RENAME: "rename takes one source and one target (A -> B)",
    Kind.MERGE: "merge takes two or more sources and one target (A + B -> C)",
    Kind.SPLIT: "split takes one source and two or more targets (A -> B | C)",
    Kind.DEPRECATE: "deprecate takes one or more sources and no targets (A -> nothing)",
}


def _fits(n: int, bounds: tuple[int, int | None]) -> bool:
    low, high = bounds
    return n >= low and (high is None or n <= high)


def migrations_parse(raw: Any) -> list[MigrationSpec]:
    """Check the shape of declared migrations (types, kinds, arity); errors name ``migrations[i]...``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValidationFailed("migrations: must be a list", path="migrations")
    if len(raw) > MAX_MIGRATIONS:
        raise ValidationFailed(f"migrations: more than {MAX_MIGRATIONS} migrations", path="migrations")
    specs: list[MigrationSpec] = []
    for i, entry in enumerate(raw):
        path = f"migrations[{i}]"
        if not isinstance(entry, dict):
            raise ValidationFailed(f"{path}: must be an object", path=path)
        kind = entry.get("kind")
        if kind not in Kind.values:
            raise ValidationFailed(f"{path}.kind: must be one of {', '.join(Kind.values)}", path=f"{path}.kind")
        lists: dict[str, tuple[str, ...]] = {}
        for name in ("sources", "targets"):
            value = entry.get(name, [])
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValidationFailed(f"{path}.{name}: must be a list of label keys", path=f"{path}.{name}")
            if len(set(value)) != len(value):
                raise ValidationFailed(f"{path}.{name}: lists a key twice", path=f"{path}.{name}")
            lists[name] = tuple(value)
        source_bounds, target_bounds = ARITY[kind]
        if not _fits(len(lists["sources"]), source_bounds) or not _fits(len(lists["targets"]), target_bounds):
            raise ValidationFailed(f"{path}: {ARITY_TEXT[kind]}", path=path)
        priority = entry.get("requeue_priority", 1)
        if priority is None:
            priority = 1
        if not isinstance(priority, int) or isinstance(priority, bool) \
                or not 1 <= priority <= MAX_REQUEUE_PRIORITY:
            raise ValidationFailed(
                f"{path}.requeue_priority: must be an integer from 1 to {MAX_REQUEUE_PRIORITY}",
                path=f"{path}.requeue_priority",
            )
        if kind == Kind.RENAME and lists["sources"] == lists["targets"]:
            raise ValidationFailed(f"{path}: a rename needs a different target key", path=path)
        # Rename and merge re-queue nothing: store 0 so the row says so.
        specs.append(MigrationSpec(kind=kind, sources=lists["sources"], targets=lists["targets"],
                                   requeue_priority=priority if kind in (Kind.SPLIT, Kind.DEPRECATE) else 0))
    return specs


@dataclass(frozen=True)
class KeyState:
    """What a version says about one key: it exists, and whether it may still be chosen."""

    key: str
    deprecated: bool


def migrations_check(*, previous: Mapping[str, KeyState], new: Mapping[str, KeyState],
                     specs: Sequence[MigrationSpec], previous_number: int | None) -> list[Problem]:
    """Cross-version checks: sources exist before, targets exist after, and nothing disappears silently."""
    problems: list[Problem] = []
    where = f"v{previous_number}" if previous_number else "the current version"
    claimed: dict[str, int] = {}
    for i, spec in enumerate(specs):
        path = f"migrations[{i}]"
        for j, source in enumerate(spec.sources):
            if source not in previous:
                problems.append(Problem(f"{path}.sources[{j}]", f"{source!r} is not a label of {where}"))
            elif source in claimed:
                problems.append(Problem(f"{path}.sources[{j}]",
                                        f"{source!r} is already the source of migrations[{claimed[source]}]"))
            else:
                claimed[source] = i
            still_live = source in new and not new[source].deprecated
            keeps_source = spec.kind == Kind.SPLIT or (spec.kind == Kind.MERGE and source in spec.targets)
            if still_live and not keeps_source:
                problems.append(Problem(
                    f"{path}.sources[{j}]",
                    f"{source!r} still exists in the draft; a {spec.kind} retires its source "
                    f"(remove it or mark it deprecated)",
                ))
        for j, target in enumerate(spec.targets):
            if target not in new:
                problems.append(Problem(f"{path}.targets[{j}]", f"{target!r} is not a label of the draft"))
            elif new[target].deprecated:
                problems.append(Problem(f"{path}.targets[{j}]", f"{target!r} is deprecated in the draft"))
    for key, state in previous.items():
        if key in claimed:
            continue
        if key not in new:
            problems.append(Problem(
                "labels", f"{key!r} is in {where} but not in the draft: declare a rename, merge, split or "
                          f"deprecate migration for it",
            ))
        elif new[key].deprecated and not state.deprecated:
            problems.append(Problem(
                "labels", f"{key!r} is newly deprecated in the draft: declare a deprecate migration (its items "
                          f"re-queue) or a rename/merge into a live label",
            ))
    return problems


@dataclass(frozen=True)
class Undeterminable:
    """A key that a split or deprecation took away: which migration, and the re-queue priority it asked for."""

    migration_index: int
    priority: int


KeyOutcome = tuple[str, ...] | Undeterminable


@dataclass
class Step:
    """One publish step (previous -> new), as a per-key function."""

    outcomes: dict[str, KeyOutcome]
    new_keys: frozenset[str]
    # migration index per source key, for per-migration counts.
    migration_of: dict[str, int]

    def map_key(self, key: str) -> KeyOutcome:
        outcome = self.outcomes.get(key)
        if outcome is not None:
            return outcome
        # A key the previous version did not have (should not happen) survives only if the new one has it.
        return (key,) if key in self.new_keys else Undeterminable(migration_index=-1, priority=1)


def step_build(*, previous_keys: Iterable[str], new_keys: Iterable[str],
               specs: Sequence[MigrationSpec]) -> Step:
    new = frozenset(new_keys)
    outcomes: dict[str, KeyOutcome] = {}
    migration_of: dict[str, int] = {}
    for key in previous_keys:
        outcomes[key] = (key,) if key in new else Undeterminable(migration_index=-1, priority=1)
    for i, spec in enumerate(specs):
        for source in spec.sources:
            migration_of[source] = i
            if spec.requeues:
                outcomes[source] = Undeterminable(migration_index=i, priority=spec.requeue_priority)
            else:
                outcomes[source] = (spec.targets[0],)
    return Step(outcomes=outcomes, new_keys=new, migration_of=migration_of)


@dataclass(frozen=True)
class MappedAnswer:
    labels: tuple[str, ...] | None  # None: not determinable
    priority: int  # re-queue priority when not determinable, else 0
    migrations: frozenset[int]  # indexes of the LAST step's migrations that touched this answer


def answer_map(labels: Sequence[str], step: Step) -> MappedAnswer:
    mapped: list[str] = []
    touched: set[int] = set()
    priority = 0
    determinable = True
    for key in labels:
        if key in step.migration_of:
            touched.add(step.migration_of[key])
        outcome = step.map_key(key)
        if isinstance(outcome, Undeterminable):
            determinable = False
            priority = max(priority, outcome.priority)
            continue
        for target in outcome:
            if target not in mapped:
                mapped.append(target)
    if not determinable:
        return MappedAnswer(labels=None, priority=priority, migrations=frozenset(touched))
    return MappedAnswer(labels=tuple(mapped), priority=0, migrations=frozenset(touched))


def answer_map_chain(labels: Sequence[str], steps: Sequence[Step]) -> MappedAnswer:
    """Map through several publishes in order (an answer given under an older version than the previous one)."""
    answer = MappedAnswer(labels=tuple(labels), priority=0, migrations=frozenset())
    for position, step in enumerate(steps):
        assert answer.labels is not None
        answer = answer_map(answer.labels, step)
        if answer.labels is None:
            if position < len(steps) - 1:
                # Lost in an earlier publish: none of the final step's migrations is responsible.
                return MappedAnswer(labels=None, priority=answer.priority, migrations=frozenset())
            return answer
    return answer


class Chain:
    """The steps from every published version of a project up to a target version.

    ``final`` is the step previous -> target. Earlier steps are rebuilt from the stored LabelMigration rows
    and label keys of each published version, so an answer given under any older version maps forward.
    """

    def __init__(self, *, project_id: int, previous_version_id: int, final: Step) -> None:
        versions = list(TaxonomyVersion.objects.filter(project_id=project_id, status=TaxonomyVersion.Status.PUBLISHED)
                        .order_by("number").values_list("id", flat=True))
        self.final = final
        self._steps_from: dict[int, list[Step]] = {}
        if previous_version_id not in versions:
            return
        versions = versions[:versions.index(previous_version_id) + 1]
        keys, specs = _stored(versions)
        steps: list[Step] = [final]
        self._steps_from[previous_version_id] = list(steps)
        for older, newer in zip(reversed(versions[:-1]), reversed(versions[1:]), strict=True):
            steps = [step_build(previous_keys=keys[older], new_keys=keys[newer], specs=specs[newer]), *steps]
            self._steps_from[older] = list(steps)

    @classmethod
    def to_published(cls, *, project_id: int, version: TaxonomyVersion) -> Chain:
        """The chain onto an already published ``version``, built entirely from stored rows."""
        previous_id = (TaxonomyVersion.objects.filter(project_id=project_id, status=TaxonomyVersion.Status.PUBLISHED,
                                                      number__lt=version.number)
                       .order_by("-number").values_list("id", flat=True).first())
        if previous_id is None:
            return cls(project_id=project_id, previous_version_id=-1, final=step_build(
                previous_keys=(), new_keys=(), specs=()))
        keys, specs = _stored([previous_id, version.pk])
        final = step_build(previous_keys=keys[previous_id], new_keys=keys[version.pk], specs=specs[version.pk])
        return cls(project_id=project_id, previous_version_id=previous_id, final=final)

    def steps_from(self, version_id: int) -> list[Step] | None:
        return self._steps_from.get(version_id)


def _stored(version_ids: list[int]) -> tuple[dict[int, list[str]], dict[int, list[MigrationSpec]]]:
    keys: dict[int, list[str]] = defaultdict(list)
    for version_id, key in Label.objects.filter(version_id__in=version_ids).values_list("version_id", "key"):
        keys[version_id].append(key)
    specs: dict[int, list[MigrationSpec]] = defaultdict(list)
    for m in LabelMigration.objects.filter(to_version_id__in=version_ids).order_by("id"):
        specs[m.to_version_id].append(MigrationSpec(kind=m.kind, sources=tuple(m.sources), targets=tuple(m.targets),
                                                    requeue_priority=m.requeue_priority))
    return keys, specs


# Arbitrary constant naming "answers of a project" in pg_advisory_xact_lock(class, project) (splits.py uses 0x51F7).
ANSWER_LOCK_CLASS = 0x7A0A
_ANSWER_LOCK_FOR_LEASE_SQL = ("SELECT pg_advisory_xact_lock_shared(%s, l.project_id::int4){also} FROM labeling_lease l "
                              "WHERE l.id = %s")


def answer_lock_shared_for_lease(*, lease_id: int, also_select: str = "") -> None:
    """Take the answer lock of the lease's project, SHARED, for the rest of the transaction (see the essay).

    A submit's first statement: a publish in its final moments is waited for here, before any row lock is held.
    ``also_select``: more select-list expressions to run in the same round trip (the submit's planner settings).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_ANSWER_LOCK_FOR_LEASE_SQL.format(also=f", {also_select}" if also_select else ""),
                           [ANSWER_LOCK_CLASS, lease_id])


def answer_lock_exclusive(*, project_id: int) -> None:
    """Take the project's answer lock EXCLUSIVE: waits for submits in flight; later ones wait for our commit."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ANSWER_LOCK_CLASS, project_id])


def project_share_lock(*, project_id: int) -> None:
    """FOR SHARE on the project row: waits for a running publish (and draft edit) to commit; see the essay."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {Project._meta.db_table} WHERE id = %s FOR SHARE",  # noqa: S608
                           [project_id])


def current_version_pinned(*, project_id: int) -> int | None:
    """The project's current taxonomy version id, which cannot change before the caller commits.

    The caller holds the project's answer lock (``answer_lock_shared_for_lease``, taken at the start of its
    transaction), so no publish can switch the version until it commits; and this is a new statement, with a
    snapshot taken after the lock was granted, so a publish that finished while we waited is seen.
    """
    return Project.objects.filter(pk=project_id).values_list("current_taxonomy_version_id", flat=True).first()


# annotation_map_forward's "the caller did not read the current version" (None is a real answer: no version).
_UNREAD: Any = object()


def annotation_map_forward(*, annotation: Annotation, current_version_id: int | None = _UNREAD,
                           ) -> MappedAnswer | None:
    """Map one annotation given under an older version onto the project's current version.

    For the submit path: a reviewer may submit on a lease taken before a publish (the answer is valid
    under the lease's version). Call this right after inserting the annotation, in the same transaction:
    it reads the current version under ``current_version_pinned``'s lock, so a publish running at the
    same time is either seen here or sees this answer itself.
    No-op (None) when the annotation is under the current version. Not determinable: the item re-queues
    for one more annotation, exactly as at publish.
    ``current_version_id``: the current version when the caller has already read it under the same lock (the
    submit reads it with its item lock: labeling/services/submit_rows.py); otherwise it is read here.
    """
    current = (current_version_pinned(project_id=annotation.project_id) if current_version_id is _UNREAD
               else current_version_id)
    if current is None or current == annotation.taxonomy_version_id:
        return None
    version = TaxonomyVersion.objects.get(pk=current)
    steps = Chain.to_published(project_id=annotation.project_id, version=version).steps_from(
        annotation.taxonomy_version_id)
    if steps is None:
        return None
    answer = answer_map_chain(list(annotation.labels), steps)
    requeued: dict[str, list[int]] | None = None
    with transaction.atomic():
        if answer.labels is None:
            # The caller (the submit) holds the item's row lock, so these values cannot move under us. What changed
            # is kept on the answer, for an undo to put back (annotation_undo).
            n_required, boost, n_done = Item.objects.filter(pk=annotation.item_id).values_list(
                "n_required", "boost", "n_done").get()
            after = (max(n_required, n_done + 1), max(boost, answer.priority))
            Item.objects.filter(pk=annotation.item_id).update(n_required=after[0], boost=after[1])
            requeued = {"n_required": [n_required, after[0]], "boost": [boost, after[1]]}
        Annotation.objects.filter(pk=annotation.pk).update(
            mapped_labels=list(answer.labels) if answer.labels is not None else None,
            mapped_taxonomy_version_id=current, requeued_item=requeued,
        )
    annotation.mapped_labels = list(answer.labels) if answer.labels is not None else None
    annotation.mapped_taxonomy_version_id = current
    annotation.requeued_item = requeued
    return answer


def labels_under_version(annotation: Annotation, version_id: int) -> list[str] | None:
    """The annotation's answer in ``version_id``'s terms, or None if not determinable / not mapped there.

    Kept for its callers; the rule itself is ``Annotation.labels_in_version`` (labeling/models/annotations.py)."""
    return annotation.labels_in_version(version_id)


# --- Planning and applying over the annotation table ----------------------------------------------


@dataclass
class MigrationCounts:
    annotations_mapped: int = 0
    annotations_undeterminable: int = 0
    items_requeued: set[int] = field(default_factory=set)


@dataclass
class Plan:
    """What a publish would do: the preview, and the exact writes the publish performs."""

    annotations_total: int = 0
    annotations_unchanged: int = 0
    annotations_mapped: int = 0  # answers whose labels change (rename/merge)
    annotations_undeterminable: int = 0  # newly not determinable (split/deprecate)
    annotations_already_undeterminable: int = 0
    annotations_stale: int = 0  # under an older version and never mapped: left alone
    # Determinable answers the new version could not hold: key -> count (a leaf that became a parent
    # while answers must be leaves), and answers with several keys under a single-label taxonomy.
    invalid_keys: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    multi_in_single: int = 0
    # (labels or None) -> annotation ids to stamp with it.
    writes: dict[tuple[str, ...] | None, list[int]] = field(default_factory=lambda: defaultdict(list))
    requeue: dict[int, int] = field(default_factory=dict)  # item id -> priority
    per_migration: dict[int, MigrationCounts] = field(default_factory=lambda: defaultdict(MigrationCounts))

    def absorb(self, later: Plan) -> None:
        """Count ``later`` (the publish's catch-up over answers committed after this plan's snapshot) in this one.

        Its writes are not taken over: the catch-up applies its own."""
        for name in ("annotations_total", "annotations_unchanged", "annotations_mapped", "annotations_undeterminable",
                     "annotations_already_undeterminable", "annotations_stale", "multi_in_single"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        for key, count in later.invalid_keys.items():
            self.invalid_keys[key] += count
        for item_id, priority in later.requeue.items():
            self.requeue[item_id] = max(self.requeue.get(item_id, 0), priority)
        for index, counts in later.per_migration.items():
            mine = self.per_migration[index]
            mine.annotations_mapped += counts.annotations_mapped
            mine.annotations_undeterminable += counts.annotations_undeterminable
            mine.items_requeued |= counts.items_requeued

    def summary(self, specs: Sequence[MigrationSpec]) -> dict[str, Any]:
        return {
            "annotations_total": self.annotations_total,
            "annotations_unchanged": self.annotations_unchanged,
            "annotations_mapped": self.annotations_mapped,
            "annotations_requeued": self.annotations_undeterminable,
            "annotations_stale": self.annotations_stale,
            "items_requeued": len(self.requeue),
            "migrations": [
                {**spec.as_dict(),
                 "annotations_mapped": self.per_migration[i].annotations_mapped,
                 "annotations_requeued": self.per_migration[i].annotations_undeterminable,
                 "items_requeued": len(self.per_migration[i].items_requeued)}
                for i, spec in enumerate(specs)
            ],
        }


def _annotation_rows(project_id: int, unstamped_for: int | None = None,
                     ) -> Iterator[tuple[int, int, int, Any, int | None, Any]]:
    """Every annotation of the project in id order, read in keyset batches (bounded memory).

    ``unstamped_for``: only those not yet readable in that version (neither given under it nor mapped onto it).
    """
    scope = Annotation.objects.filter(project_id=project_id)
    if unstamped_for is not None:
        scope = scope.exclude(taxonomy_version_id=unstamped_for).exclude(mapped_taxonomy_version_id=unstamped_for)
    last_id = 0
    while True:
        batch = list(
            scope.filter(id__gt=last_id).order_by("id").values_list(
                "id", "item_id", "taxonomy_version_id", "labels", "mapped_taxonomy_version_id", "mapped_labels",
            )[:SCAN_BATCH]
        )
        if not batch:
            return
        yield from batch
        last_id = batch[-1][0]


def plan_build(*, project_id: int, chain: Chain, answer_keys: frozenset[str] | None = None,
               single_label: bool = False, unstamped_for: int | None = None) -> Plan:
    """Walk the project's annotations and decide, for each, its answer under the version being published.

    ``answer_keys`` are the keys an answer may carry in the new version (its leaves, unless non-leaf
    answers are allowed); None skips that check. ``unstamped_for`` (the publish's catch-up): only the
    answers not yet written for that version.
    """
    plan = Plan()
    rows = _annotation_rows(project_id, unstamped_for)
    for ann_id, item_id, version_id, labels, mapped_version_id, mapped_labels in rows:
        plan.annotations_total += 1
        if mapped_version_id is not None:
            effective_version, effective = mapped_version_id, mapped_labels
        else:
            effective_version, effective = version_id, labels
        steps = chain.steps_from(effective_version)
        if steps is None:
            # Not under any version before the one being published (cannot happen through the services).
            plan.annotations_stale += 1
            continue
        if effective is None:
            # Already not determinable at the previous version (its item was re-queued then): stays so.
            plan.annotations_already_undeterminable += 1
            plan.writes[None].append(ann_id)
            continue
        answer = answer_map_chain(list(effective), steps)
        for index in answer.migrations:
            counts = plan.per_migration[index]
            if answer.labels is None:
                counts.annotations_undeterminable += 1
                counts.items_requeued.add(item_id)
            else:
                counts.annotations_mapped += 1
        if answer.labels is None:
            plan.annotations_undeterminable += 1
            plan.requeue[item_id] = max(plan.requeue.get(item_id, 0), answer.priority)
        else:
            if list(answer.labels) == list(effective):
                plan.annotations_unchanged += 1
            else:
                plan.annotations_mapped += 1
            if answer_keys is not None:
                for key in answer.labels:
                    if key not in answer_keys:
                        plan.invalid_keys[key] += 1
            if single_label and len(answer.labels) > 1:
                plan.multi_in_single += 1
        plan.writes[answer.labels].append(ann_id)
    return plan


def plan_problems(plan: Plan) -> list[Problem]:
    """Problems only the data reveals: answers that would map onto something the new version forbids."""
    problems = [
        Problem("labels", f"{count} answer(s) carry {key!r}, which is no longer a leaf in the draft while answers "
                          f"must be leaves: declare a split or deprecate for {key!r}, or allow non-leaf answers")
        for key, count in sorted(plan.invalid_keys.items())
    ]
    if plan.multi_in_single:
        problems.append(Problem(
            "multi_label", f"{plan.multi_in_single} answer(s) carry several labels, which a single-label "
                           f"taxonomy cannot hold: keep multi_label, or deprecate the labels involved",
        ))
    return problems


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def plan_apply_answers(*, plan: Plan, new_version_id: int) -> None:
    """Write the plan's answers as read in the new version. Inside the publish transaction.

    Answers are grouped by their mapped labels, so a 100k-annotation project is a few hundred
    ``UPDATE ... WHERE id IN (...)`` statements, not one per row. An answer undone meanwhile is simply absent.
    """
    for labels, ids in plan.writes.items():
        value = list(labels) if labels is not None else None
        for chunk in _chunks(ids, UPDATE_BATCH):
            Annotation.objects.filter(id__in=chunk).update(mapped_labels=value,
                                                           mapped_taxonomy_version_id=new_version_id)


def plan_apply_requeue(*, plan: Plan) -> None:
    """Re-open the plan's items for one more answer, at their priority. Only while holding the answer lock
    EXCLUSIVE (see the essay): these are item rows that submits lock."""
    by_priority: dict[int, list[int]] = defaultdict(list)
    for item_id, priority in plan.requeue.items():
        by_priority[priority].append(item_id)
    for priority, item_ids in sorted(by_priority.items()):
        for chunk in _chunks(sorted(item_ids), UPDATE_BATCH):
            # One statement per chunk: PostgreSQL evaluates n_done under each row's lock, so a submit
            # racing this UPDATE cannot make the item need one annotation too few.
            Item.objects.filter(id__in=chunk).update(
                boost=Greatest(F("boost"), Value(priority)),
                n_required=Greatest(F("n_required"), F("n_done") + 1),
            )


def items_without_eligible_reviewer(*, project_id: int, item_ids: Iterable[int]) -> int:
    """How many of ``item_ids`` every current labeller has already annotated (nobody could relabel them)."""
    labelling_roles = [role for role, caps in ROLE_CAPABILITIES.items() if Capability.LABEL in caps]
    labellers = set(Membership.objects.filter(project_id=project_id, role__in=labelling_roles)
                    .values_list("user_id", flat=True))
    ids = sorted(set(item_ids))
    if not ids:
        return 0
    if not labellers:
        return len(ids)
    covered: dict[int, set[int]] = defaultdict(set)
    for chunk in _chunks(ids, UPDATE_BATCH):
        for item_id, reviewer_id in Annotation.objects.filter(item_id__in=chunk, reviewer_id__in=labellers) \
                .values_list("item_id", "reviewer_id"):
            covered[item_id].add(reviewer_id)
    return sum(1 for item_id in ids if covered[item_id] >= labellers)
