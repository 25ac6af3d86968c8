"""Taxonomy versions: the draft a policy lead edits, and publishing it as an immutable version.

A project has at most one *draft* (a TaxonomyVersion with status draft, plus its Label rows and the
LabelMigration rows declared against the version it is based on). Saving replaces the draft whole:
the editor sends the complete document, so there is no partial edit to reconcile.

``taxonomy_draft_publish`` is all-or-nothing. It validates everything first (the document, the
migrations' shape and their references into both versions, that nothing disappears undeclared), then
in ONE transaction flips the draft to published, maps the annotations, re-queues the items whose
labels are no longer determinable, moves ``Project.current_taxonomy_version`` and writes the audit.
Any failure rolls all of it back; see taxonomy_migrations.py for the mapping rules.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import Label, LabelMigration, Project, TaxonomyVersion
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, ValidationFailed
from labeling.services.taxonomy_io import ParsedTaxonomy, taxonomy_parse
from labeling.services.taxonomy_migrations import (
    Chain,
    KeyState,
    MigrationSpec,
    Plan,
    Problem,
    answer_lock_exclusive,
    items_without_eligible_reviewer,
    migrations_check,
    migrations_parse,
    plan_apply_answers,
    plan_apply_requeue,
    plan_build,
    plan_problems,
    step_build,
)
from learning.scheduling import request_retrain

MAX_CHANGELOG_CHARS = 5000


def taxonomy_version_write_labels(*, version: TaxonomyVersion, parsed: ParsedTaxonomy) -> None:
    """Create the label rows of a *draft* version; parents are created before their children.

    One bulk INSERT per tree level (at most MAX_DEPTH), so a 2,000-label import is a handful of statements.
    """
    if version.status != TaxonomyVersion.Status.DRAFT:
        raise ValidationFailed("labels can only be written into a draft version")
    by_key: dict[str, Label] = {}
    pending = list(parsed.labels)
    while pending:
        level = [p for p in pending if p.parent_key is None or p.parent_key in by_key]
        if not level:  # taxonomy_parse guarantees parents come first; this guards a caller bug
            raise ValidationFailed(f"labels: parent of {pending[0].key!r} is missing")
        rows = [
            Label(
                version=version, key=p.key, name=p.name, description=p.description,
                parent=by_key[p.parent_key] if p.parent_key else None,
                position=p.position, severity=p.severity, action=p.action,
                positive_examples=p.positive_examples, negative_examples=p.negative_examples,
                deprecated=p.deprecated,
            )
            for p in level
        ]
        for label in Label.objects.bulk_create(rows):
            by_key[label.key] = label
        done = {p.key for p in level}
        pending = [p for p in pending if p.key not in done]


def taxonomy_publish_document(*, project: Project, parsed: ParsedTaxonomy,
                              actor: Actor, changelog: str = "") -> TaxonomyVersion:
    """Publish ``parsed`` as the project's next version in one transaction: all of it, or nothing.

    Used for a project's first version (no annotations yet, nothing to migrate).
    """
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        last = TaxonomyVersion.objects.filter(project=locked).aggregate(n=Max("number"))["n"] or 0
        version = TaxonomyVersion.objects.create(
            project=locked, name=parsed.name, multi_label=parsed.multi_label,
            allow_non_leaf=parsed.allow_non_leaf, changelog=changelog, status=TaxonomyVersion.Status.DRAFT,
            based_on=locked.current_taxonomy_version,
            created_by=acting_user(actor),
        )
        taxonomy_version_write_labels(version=version, parsed=parsed)
        TaxonomyVersion.objects.filter(pk=version.pk).update(
            status=TaxonomyVersion.Status.PUBLISHED, number=last + 1, published_at=timezone.now(),
            published_by=acting_user(actor),
        )
        version.refresh_from_db()
        Project.objects.filter(pk=locked.pk).update(current_taxonomy_version=version)
        project.current_taxonomy_version = version
        audit_record(actor=actor, action="taxonomy.publish", obj=version, project=locked,
                     data={"number": version.number, "labels": len(parsed.labels), "changelog": changelog})
        return version


# --- The draft ---------------------------------------------------------------------------------------


def taxonomy_draft_get(*, project: Project) -> TaxonomyVersion | None:
    return TaxonomyVersion.objects.filter(project=project, status=TaxonomyVersion.Status.DRAFT).first()


def taxonomy_draft_save(*, actor: Actor, project: Project, document: Any,
                        migrations: Any = None, source: str = "editor") -> TaxonomyVersion:
    """Replace the project's draft with ``document`` (+ declared ``migrations``), creating it if needed.

    The document and the migrations' shape are validated before anything is written (errors name the
    path). References between versions are checked by preview and publish, so a half-finished draft
    (a label removed, its migration not declared yet) can still be saved.
    """
    parsed = taxonomy_parse(document)
    specs = migrations_parse(migrations)
    with transaction.atomic():
        # NO KEY UPDATE: serialises draft edits with each other and with publish (FOR UPDATE), but not with
        # submits and checkouts, whose inserts only take a key-share lock on the project row.
        locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        base = locked.current_taxonomy_version
        if specs and base is None:
            raise ValidationFailed("migrations: the project has no published version to migrate from",
                                   path="migrations")
        draft = (TaxonomyVersion.objects.select_for_update()
                 .filter(project=locked, status=TaxonomyVersion.Status.DRAFT).first())
        created = draft is None
        if draft is None:
            draft = TaxonomyVersion.objects.create(
                project=locked, status=TaxonomyVersion.Status.DRAFT, name=parsed.name,
                multi_label=parsed.multi_label, allow_non_leaf=parsed.allow_non_leaf,
                based_on=base, created_by=acting_user(actor),
            )
        else:
            if draft.based_on_id != (base.pk if base else None):
                # Only possible if something published around the draft; its migrations would point
                # at the wrong version, so it must be rebuilt on the current one.
                draft.based_on = base
            draft.name, draft.multi_label, draft.allow_non_leaf = parsed.name, parsed.multi_label, \
                parsed.allow_non_leaf
            draft.save(update_fields=["name", "multi_label", "allow_non_leaf", "based_on"])
            Label.objects.filter(version=draft).delete()
            LabelMigration.objects.filter(to_version=draft).delete()
        taxonomy_version_write_labels(version=draft, parsed=parsed)
        if specs and base is not None:
            LabelMigration.objects.bulk_create([
                LabelMigration(to_version=draft, from_version=base, kind=spec.kind, sources=list(spec.sources),
                               targets=list(spec.targets), requeue_priority=spec.requeue_priority)
                for spec in specs
            ])
        audit_record(actor=actor, action="taxonomy.draft_save", obj=draft, project=locked, data={
            "created": created, "source": source, "labels": len(parsed.labels), "migrations": len(specs),
            "based_on": base.number if base else None,
        })
    return draft


def taxonomy_import(*, actor: Actor, project: Project, document: Any) -> TaxonomyVersion:
    """Import a taxonomy JSON document (either form) into the draft; migrations are declared separately.

    The draft's previously declared migrations are kept when their keys still make sense to check:
    they are re-validated at preview and publish like any other.
    """
    existing = taxonomy_draft_get(project=project)
    migrations = [spec.as_dict() for spec in _draft_specs(existing)] if existing is not None else None
    return taxonomy_draft_save(actor=actor, project=project, document=document, migrations=migrations,
                               source="import")


def taxonomy_draft_discard(*, actor: Actor, project: Project) -> None:
    with transaction.atomic():
        locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        draft = (TaxonomyVersion.objects.select_for_update()
                 .filter(project=locked, status=TaxonomyVersion.Status.DRAFT).first())
        if draft is None:
            raise NotFound("there is no draft to discard")
        draft_id = draft.pk
        LabelMigration.objects.filter(to_version=draft).delete()
        Label.objects.filter(version=draft).delete()
        draft.delete()
        audit_record(actor=actor, action="taxonomy.draft_discard", obj=locked, project=locked,
                     data={"draft_id": draft_id})


def _draft_specs(draft: TaxonomyVersion) -> list[MigrationSpec]:
    return [
        MigrationSpec(kind=m.kind, sources=tuple(m.sources), targets=tuple(m.targets),
                      requeue_priority=m.requeue_priority)
        for m in LabelMigration.objects.filter(to_version=draft).order_by("id")
    ]


def _key_states(version: TaxonomyVersion) -> dict[str, KeyState]:
    return {key: KeyState(key=key, deprecated=deprecated)
            for key, deprecated in Label.objects.filter(version=version).values_list("key", "deprecated")}


def _draft_problems(draft: TaxonomyVersion, base: TaxonomyVersion | None,
                    specs: list[MigrationSpec]) -> list[Problem]:
    new = _key_states(draft)
    problems: list[Problem] = []
    if not any(not state.deprecated for state in new.values()):
        problems.append(Problem("labels", "the draft has no label that is not deprecated"))
    if base is None:
        return problems
    return problems + migrations_check(previous=_key_states(base), new=new, specs=specs,
                                       previous_number=base.number)


def _plan(project: Project, draft: TaxonomyVersion, base: TaxonomyVersion | None,
          specs: list[MigrationSpec], unstamped_for: int | None = None) -> Plan:
    if base is None:
        return Plan()
    new_rows = list(Label.objects.filter(version=draft).values_list("key", "parent__key"))
    new_keys = [key for key, _ in new_rows]
    parents = {parent for _, parent in new_rows if parent}
    step = step_build(
        previous_keys=Label.objects.filter(version=base).values_list("key", flat=True),
        new_keys=new_keys, specs=specs,
    )
    answer_keys = None if draft.allow_non_leaf else frozenset(k for k in new_keys if k not in parents)
    chain = Chain(project_id=project.pk, previous_version_id=base.pk, final=step)
    return plan_build(project_id=project.pk, chain=chain, answer_keys=answer_keys,
                      single_label=not draft.multi_label, unstamped_for=unstamped_for)


def _require_draft(project: Project, *, lock: bool = False) -> TaxonomyVersion:
    query = TaxonomyVersion.objects.filter(project=project, status=TaxonomyVersion.Status.DRAFT)
    if lock:
        query = query.select_for_update()
    draft = query.first()
    if draft is None:
        raise NotFound("there is no draft: save one first (PUT .../taxonomy/draft)")
    return draft


def _require_current_base(project: Project, draft: TaxonomyVersion) -> TaxonomyVersion | None:
    base = project.current_taxonomy_version
    if draft.based_on_id != (base.pk if base else None):
        raise Conflict(
            "the draft is based on an older version than the current one; save it again to rebase it",
            reason="stale_draft",
        )
    return base


def taxonomy_draft_preview(*, project: Project) -> dict[str, Any]:
    """What publishing the draft would do, without doing it: counts per migration, and any problems."""
    project = Project.objects.select_related("current_taxonomy_version").get(pk=project.pk)
    draft = _require_draft(project)
    base = _require_current_base(project, draft)
    specs = _draft_specs(draft)
    problems = _draft_problems(draft, base, specs)
    plan = _plan(project, draft, base, specs)
    problems += plan_problems(plan)
    return {
        "based_on": base.number if base else None,
        "publishable": not problems,
        "problems": [p.as_dict() for p in problems],
        **plan.summary(specs),
        "items_requeued_without_eligible_reviewer": items_without_eligible_reviewer(
            project_id=project.pk, item_ids=plan.requeue.keys()),
    }


def _refuse_problems(problems: list[Problem]) -> None:
    if problems:
        raise ValidationFailed(
            f"the draft cannot be published: {problems[0].as_dict()['message']}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=[p.as_dict() for p in problems],
        )


def taxonomy_draft_publish(*, actor: Actor, project: Project, changelog: str) -> TaxonomyVersion:
    """Publish the draft as the next immutable version, mapping annotations and re-queueing items.

    All-or-nothing: every check runs before the first write, and every write is in one transaction.
    """
    changelog = (changelog or "").strip()
    if not changelog:
        raise ValidationFailed("changelog: say what changed (it is shown in the history)", path="changelog")
    if len(changelog) > MAX_CHANGELOG_CHARS:
        raise ValidationFailed(f"changelog: longer than {MAX_CHANGELOG_CHARS} characters", path="changelog")
    with transaction.atomic():
        # The three parts and the lock order of a publish are an essay in taxonomy_migrations.py ("A publish never
        # stalls reviewers"). Part 1: NO KEY UPDATE serialises publishes and draft edits without holding back the
        # FOR KEY SHARE of every lease and annotation INSERT, so reviewers label on while the slow work runs.
        locked = Project.objects.select_for_update(no_key=True, of=("self",)).select_related(
            "current_taxonomy_version").get(pk=project.pk)
        draft = _require_draft(locked, lock=True)
        base = _require_current_base(locked, draft)
        specs = _draft_specs(draft)
        problems = _draft_problems(draft, base, specs)
        plan = _plan(locked, draft, base, specs) if not problems else Plan()
        problems += plan_problems(plan)
        _refuse_problems(problems)

        last = TaxonomyVersion.objects.filter(project=locked).aggregate(n=Max("number"))["n"] or 0
        now = timezone.now()
        TaxonomyVersion.objects.filter(pk=draft.pk, status=TaxonomyVersion.Status.DRAFT).update(
            status=TaxonomyVersion.Status.PUBLISHED, number=last + 1, published_at=now,
            published_by=acting_user(actor), changelog=changelog,
        )
        draft.refresh_from_db()
        plan_apply_answers(plan=plan, new_version_id=draft.pk)

        # Part 2: wait for the submits in flight; the ones after this wait for our commit.
        answer_lock_exclusive(project_id=locked.pk)
        # Part 3: the answers committed since the plan's snapshot, then the item re-queue and the switch.
        if base is not None:
            late = _plan(locked, draft, base, specs, unstamped_for=draft.pk)
            _refuse_problems(plan_problems(late))
            plan_apply_answers(plan=late, new_version_id=draft.pk)
            plan.absorb(late)
        plan_apply_requeue(plan=plan)
        Project.objects.filter(pk=locked.pk).update(current_taxonomy_version=draft)
        project.current_taxonomy_version = draft

        summary = plan.summary(specs)
        audit_record(actor=actor, action="taxonomy.publish", obj=draft, project=locked, data={
            "number": draft.number, "based_on": base.number if base else None, "changelog": changelog,
            "labels": Label.objects.filter(version=draft).count(), "migrations": len(specs),
            "annotations_mapped": summary["annotations_mapped"],
            "annotations_requeued": summary["annotations_requeued"],
            "items_requeued": summary["items_requeued"],
        })
        for entry in summary["migrations"]:
            audit_record(actor=actor, action="taxonomy.migrate", obj=draft, project=locked, data={
                "from": base.number if base else None, "to": draft.number, **entry,
            })
        # Training sets read mapped labels: the label space changed, so the model should too.
        request_retrain(project_id=locked.pk)
    return draft
