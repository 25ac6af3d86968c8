"""Publishing a draft with label migrations: exact mapped answers, exact re-queued items, all-or-nothing."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from labeling.models import Annotation, AuditEvent, Item, Label, LabelMigration, Lease, Project, TaxonomyVersion
from labeling.services import taxonomy as taxonomy_services
from labeling.services.errors import Conflict, ValidationFailed
from labeling.services.taxonomy import (
    taxonomy_draft_preview,
    taxonomy_draft_publish,
    taxonomy_draft_save,
)
from labeling.services.taxonomy_migrations import annotation_map_forward, labels_under_version
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

V1: dict[str, Any] = {
    "name": "Abuse policy",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "OK"},
        {"key": "spam", "name": "Spam"},
        {"key": "scam", "name": "Scam"},
        {"key": "hate", "name": "Hate"},
        {"key": "other", "name": "Other"},
    ],
}


def doc(*labels: dict[str, Any], multi_label: bool = False, name: str = "Abuse policy") -> dict[str, Any]:
    return {"name": name, "multi_label": multi_label, "labels": list(labels)}


def lab(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "name": key.title(), **extra}


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="abuse", taxonomy=V1)
    lead = member(project, username="lead", role="policy_lead")
    reviewers = [member(project, username=f"r{i}", role="reviewer") for i in range(3)]
    return {"project": project, "lead": lead, "reviewers": reviewers}


def annotate(project: Project, reviewer: Any, item: Item, labels: list[str]) -> Annotation:
    version = project.current_taxonomy_version
    assert version is not None
    annotation = Annotation.objects.create(
        project=project, item=item, reviewer=reviewer, taxonomy_version=version,
        labels=labels, selection_reason="fallback_random",
    )
    Item.objects.filter(pk=item.pk).update(n_done=item.n_done + 1)
    item.n_done += 1
    return annotation


def current_number(project: Project) -> int | None:
    return Project.objects.filter(pk=project.pk).values_list("current_taxonomy_version__number", flat=True).first()


def items(project: Project, *names: str, n_required: int = 1) -> dict[str, Item]:
    return {name: ItemFactory(project=project, external_id=name, n_required=n_required) for name in names}


def state(project: Project) -> dict[str, tuple[int, int, int]]:
    """external_id -> (boost, n_required, n_done)"""
    return {i.external_id: (i.boost, i.n_required, i.n_done)
            for i in Item.objects.filter(project=project).order_by("external_id")}


def mapped(annotation: Annotation) -> tuple[Any, int | None]:
    annotation.refresh_from_db()
    version = annotation.mapped_taxonomy_version.number if annotation.mapped_taxonomy_version else None
    return annotation.mapped_labels, version


def publish(world: dict[str, Any], document: dict[str, Any], migrations: list[dict[str, Any]],
            changelog: str = "change") -> TaxonomyVersion:
    taxonomy_draft_save(actor=world["lead"], project=world["project"], document=document, migrations=migrations)
    return taxonomy_draft_publish(actor=world["lead"], project=world["project"], changelog=changelog)


def test_rename_maps_exactly_and_requeues_nothing(world: dict[str, Any]) -> None:
    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a", "b", "c")
    a_spam = annotate(project, r0, its["a"], ["spam"])
    b_spam = annotate(project, r1, its["b"], ["spam"])
    c_ok = annotate(project, r0, its["c"], ["ok"])
    before = state(project)

    v2 = publish(world, doc(lab("ok"), lab("junk"), lab("scam"), lab("hate"), lab("other")),
                 [{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}])

    assert v2.number == 2
    assert mapped(a_spam) == (["junk"], 2)
    assert mapped(b_spam) == (["junk"], 2)
    assert mapped(c_ok) == (["ok"], 2)
    a_spam.refresh_from_db()
    assert a_spam.labels == ["spam"]  # the reviewer's answer is never rewritten
    assert state(project) == before
    project.refresh_from_db()
    assert project.current_taxonomy_version_id == v2.pk
    assert list(LabelMigration.objects.filter(to_version=v2).values_list("kind", "sources", "targets",
                                                                         "requeue_priority")) == [
        ("rename", ["spam"], ["junk"], 0)]


def test_merge_maps_both_sources_onto_the_target(world: dict[str, Any]) -> None:
    project, (r0, r1, r2) = world["project"], world["reviewers"]
    its = items(project, "a", "b", "c", n_required=2)
    anns = {
        "a0": annotate(project, r0, its["a"], ["spam"]),
        "a1": annotate(project, r1, its["a"], ["scam"]),
        "b0": annotate(project, r2, its["b"], ["scam"]),
        "c0": annotate(project, r0, its["c"], ["hate"]),
    }
    before = state(project)
    preview_doc = doc(lab("ok"), lab("fraud"), lab("hate"), lab("other"))
    taxonomy_draft_save(actor=world["lead"], project=project, document=preview_doc,
                        migrations=[{"kind": "merge", "sources": ["spam", "scam"], "targets": ["fraud"]}])
    preview = taxonomy_draft_preview(project=project)
    assert preview["publishable"] is True
    assert (preview["annotations_total"], preview["annotations_mapped"], preview["annotations_unchanged"],
            preview["annotations_requeued"], preview["items_requeued"]) == (4, 3, 1, 0, 0)
    assert preview["migrations"] == [{"kind": "merge", "sources": ["spam", "scam"], "targets": ["fraud"],
                                      "requeue_priority": 0, "annotations_mapped": 3, "annotations_requeued": 0,
                                      "items_requeued": 0}]

    taxonomy_draft_publish(actor=world["lead"], project=project, changelog="spam and scam are one thing")

    assert {name: mapped(a) for name, a in anns.items()} == {
        "a0": (["fraud"], 2), "a1": (["fraud"], 2), "b0": (["fraud"], 2), "c0": (["hate"], 2)}
    assert state(project) == before


def test_merge_into_one_of_its_sources(world: dict[str, Any]) -> None:
    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a", "b")
    a = annotate(project, r0, its["a"], ["scam"])
    b = annotate(project, r1, its["b"], ["spam"])
    publish(world, doc(lab("ok"), lab("spam"), lab("hate"), lab("other")),
            [{"kind": "merge", "sources": ["spam", "scam"], "targets": ["spam"]}])
    assert (mapped(a), mapped(b)) == ((["spam"], 2), (["spam"], 2))


def test_split_requeues_exactly_the_affected_items_with_boost_and_one_more_required(world: dict[str, Any]) -> None:
    project, (r0, r1, r2) = world["project"], world["reviewers"]
    # overlap 2: "a" is finished (2/2), "b" half done (1/2), "c" finished but not hate, "d" untouched.
    its = items(project, "a", "b", "c", "d", n_required=2)
    a0 = annotate(project, r0, its["a"], ["hate"])
    a1 = annotate(project, r1, its["a"], ["ok"])
    b0 = annotate(project, r2, its["b"], ["hate"])
    c0 = annotate(project, r0, its["c"], ["ok"])
    c1 = annotate(project, r1, its["c"], ["spam"])
    Item.objects.filter(external_id="c").update(boost=7)

    split = {"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"], "requeue_priority": 5}
    new = doc(lab("ok"), lab("spam"), lab("scam"),
              lab("hate", children=[lab("hate/slur"), lab("hate/threat")]), lab("other"))
    taxonomy_draft_save(actor=world["lead"], project=project, document=new, migrations=[split])
    preview = taxonomy_draft_preview(project=project)
    assert (preview["annotations_requeued"], preview["items_requeued"], preview["annotations_unchanged"]) == (2, 2, 3)
    assert preview["migrations"][0]["annotations_requeued"] == 2
    assert preview["migrations"][0]["items_requeued"] == 2
    # Three labellers (r0-r2) plus the lead: nobody is stuck.
    assert preview["items_requeued_without_eligible_reviewer"] == 0

    taxonomy_draft_publish(actor=world["lead"], project=project, changelog="hate split by kind")

    assert mapped(a0) == (None, 2)
    assert mapped(b0) == (None, 2)
    assert (mapped(a1), mapped(c0), mapped(c1)) == ((["ok"], 2), (["ok"], 2), (["spam"], 2))
    # a: finished 2/2 -> needs 3; b: 1/2 open already -> stays 2 (its next annotation is under v2); boost 5 each.
    assert state(project) == {"a": (5, 3, 2), "b": (5, 2, 1), "c": (7, 2, 2), "d": (0, 2, 0)}
    requeued = set(Item.objects.filter(project=project, boost=5).values_list("external_id", flat=True))
    assert requeued == {"a", "b"}


def test_deprecate_requeues_and_keeps_a_higher_existing_boost(world: dict[str, Any]) -> None:
    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a", "b", "c")
    a = annotate(project, r0, its["a"], ["other"])
    b = annotate(project, r1, its["b"], ["other"])
    c = annotate(project, r0, its["c"], ["scam"])
    Item.objects.filter(external_id="b").update(boost=50)

    publish(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate"), lab("other", deprecated=True)),
            [{"kind": "deprecate", "sources": ["other"], "requeue_priority": 9}])

    assert (mapped(a), mapped(b), mapped(c)) == ((None, 2), (None, 2), (["scam"], 2))
    assert state(project) == {"a": (9, 2, 1), "b": (50, 2, 1), "c": (0, 1, 1)}
    assert Label.objects.get(version__number=2, version__project=project, key="other").deprecated is True


def test_multi_label_answer_maps_key_by_key_and_any_undeterminable_key_requeues(world: dict[str, Any]) -> None:
    project = ProjectFactory(slug="multi", taxonomy={**V1, "multi_label": True})
    lead = member(project, username="lead2", role="policy_lead")
    r0, r1 = member(project, username="m0", role="reviewer"), member(project, username="m1", role="reviewer")
    its = items(project, "a", "b")
    a = annotate(project, r0, its["a"], ["spam", "scam", "ok"])
    b = annotate(project, r1, its["b"], ["spam", "hate"])
    taxonomy_draft_save(
        actor=lead, project=project,
        document=doc(lab("ok"), lab("fraud"), lab("other"), multi_label=True),
        migrations=[{"kind": "merge", "sources": ["spam", "scam"], "targets": ["fraud"]},
                    {"kind": "deprecate", "sources": ["hate"], "requeue_priority": 3}],
    )
    taxonomy_draft_publish(actor=lead, project=project, changelog="merge + deprecate")
    assert mapped(a) == (["fraud", "ok"], 2)  # deduplicated, order kept
    assert mapped(b) == (None, 2)
    assert state(project) == {"a": (0, 1, 1), "b": (3, 2, 1)}


def test_two_publishes_chain_and_stale_answers_map_forward(world: dict[str, Any]) -> None:
    project, (r0, r1, r2) = world["project"], world["reviewers"]
    its = items(project, "a", "b", "c")
    a = annotate(project, r0, its["a"], ["spam"])
    v1 = project.current_taxonomy_version
    publish(world, doc(lab("ok"), lab("junk"), lab("scam"), lab("hate"), lab("other")),
            [{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}])
    # A lease taken under v1 is submitted after v2 was published: the submit path maps it forward.
    late = Annotation.objects.create(project=project, item=its["b"], reviewer=r1, taxonomy_version=v1,
                                     labels=["scam"], selection_reason="fallback_random")
    answer = annotation_map_forward(annotation=late)
    assert answer is not None and answer.labels == ("scam",)
    assert mapped(late) == (["scam"], 2)
    # A stale answer nobody mapped (e.g. written before this service existed) is caught up by the next publish.
    orphan = Annotation.objects.create(project=project, item=its["c"], reviewer=r2, taxonomy_version=v1,
                                       labels=["spam"], selection_reason="fallback_random")

    publish(world, doc(lab("ok"), lab("fraud"), lab("hate"), lab("other")),
            [{"kind": "merge", "sources": ["junk", "scam"], "targets": ["fraud"]}])

    assert mapped(a) == (["fraud"], 3)
    assert mapped(late) == (["fraud"], 3)
    assert mapped(orphan) == (["fraud"], 3)
    v3 = Project.objects.get(pk=project.pk).current_taxonomy_version_id
    assert v3 is not None
    a.refresh_from_db()
    assert labels_under_version(a, v3) == ["fraud"]


def test_map_forward_of_a_split_label_requeues_the_item(world: dict[str, Any]) -> None:
    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a")
    annotate(project, r0, its["a"], ["ok"])
    v1 = project.current_taxonomy_version
    publish(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate/slur"), lab("hate/threat"), lab("other")),
            [{"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"], "requeue_priority": 4}])
    Item.objects.filter(pk=its["a"].pk).update(n_required=2)
    late = Annotation.objects.create(project=project, item=its["a"], reviewer=r1, taxonomy_version=v1,
                                     labels=["hate"], selection_reason="fallback_random")
    Item.objects.filter(pk=its["a"].pk).update(n_done=2)
    annotation_map_forward(annotation=late)
    assert mapped(late) == (None, 2)
    assert state(project) == {"a": (4, 3, 2)}


def test_requeued_item_goes_to_a_different_reviewer_not_the_original_one(world: dict[str, Any]) -> None:
    from labeling.services.queues import queue_checkout_next

    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a", "z")
    annotate(project, r0, its["a"], ["hate"])
    publish(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate/slur"), lab("hate/threat"), lab("other")),
            [{"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"], "requeue_priority": 2}])
    project.refresh_from_db()
    # The original reviewer never gets it back (one annotation per item and reviewer) ...
    lease0 = queue_checkout_next(project=project, reviewer=r0)
    assert lease0 is not None and lease0.item.external_id == "z"
    # ... another reviewer gets it first (boosted), under the new version.
    lease1 = queue_checkout_next(project=project, reviewer=r1)
    assert lease1 is not None and lease1.item.external_id == "a"
    assert Lease.objects.filter(pk=lease1.pk).values_list("taxonomy_version__number", flat=True).get() == 2
    assert lease1.selection_reason == "relabel"


def test_preview_counts_items_no_labeller_can_take(world: dict[str, Any]) -> None:
    project = ProjectFactory(slug="tiny", taxonomy=V1)
    lead = member(project, username="tinylead", role="policy_lead")
    only = member(project, username="only", role="reviewer")
    its = items(project, "a")
    annotate(project, only, its["a"], ["hate"])
    annotate(project, lead, its["a"], ["hate"])  # the lead labels too (policy leads may label)
    taxonomy_draft_save(actor=lead, project=project,
                        document=doc(lab("ok"), lab("spam"), lab("scam"), lab("other")),
                        migrations=[{"kind": "deprecate", "sources": ["hate"]}])
    preview = taxonomy_draft_preview(project=project)
    assert (preview["items_requeued"], preview["items_requeued_without_eligible_reviewer"]) == (1, 1)


# --- Checks that block a publish ---------------------------------------------------------------------------


def problems_of(world: dict[str, Any], document: dict[str, Any], migrations: list[dict[str, Any]]) -> list[str]:
    taxonomy_draft_save(actor=world["lead"], project=world["project"], document=document, migrations=migrations)
    return [p["message"] for p in taxonomy_draft_preview(project=world["project"])["problems"]]


def test_a_label_that_disappears_without_a_migration_blocks_publish(world: dict[str, Any]) -> None:
    project = world["project"]
    assert problems_of(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate")), []) == [
        "labels: 'other' is in v1 but not in the draft: declare a rename, merge, split or deprecate migration for it"]
    with pytest.raises(ValidationFailed) as caught:
        taxonomy_draft_publish(actor=world["lead"], project=project, changelog="oops")
    assert "'other' is in v1 but not in the draft" in caught.value.message
    assert list(TaxonomyVersion.objects.filter(project=project).values_list("number", "status").order_by("id")) == [
        (1, "published"), (None, "draft")]
    assert current_number(project) == 1


def test_bad_migration_references_are_named(world: dict[str, Any]) -> None:
    messages = problems_of(
        world,
        doc(lab("ok"), lab("spam"), lab("scam"), lab("hate"), lab("gone", deprecated=True)),
        [{"kind": "rename", "sources": ["nope"], "targets": ["ok2"]},
         {"kind": "rename", "sources": ["other"], "targets": ["gone"]},
         {"kind": "deprecate", "sources": ["other"]},
         {"kind": "rename", "sources": ["ok"], "targets": ["spam"]}],
    )
    assert messages == [
        "migrations[0].sources[0]: 'nope' is not a label of v1",
        "migrations[0].targets[0]: 'ok2' is not a label of the draft",
        "migrations[1].targets[0]: 'gone' is deprecated in the draft",
        "migrations[2].sources[0]: 'other' is already the source of migrations[1]",
        "migrations[3].sources[0]: 'ok' still exists in the draft; a rename retires its source "
        "(remove it or mark it deprecated)",
    ]


def test_newly_deprecated_label_needs_a_migration(world: dict[str, Any]) -> None:
    messages = problems_of(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate"),
                                      lab("other", deprecated=True)), [])
    assert messages == ["labels: 'other' is newly deprecated in the draft: declare a deprecate migration (its items "
                        "re-queue) or a rename/merge into a live label"]


def test_leaf_that_gains_children_blocks_only_when_answers_carry_it(world: dict[str, Any]) -> None:
    new = doc(lab("ok"), lab("spam", children=[lab("spam/phishing")]), lab("scam"), lab("hate"), lab("other"))
    assert problems_of(world, new, []) == []
    project, r0 = world["project"], world["reviewers"][0]
    annotate(project, r0, items(project, "a")["a"], ["spam"])
    assert problems_of(world, new, []) == [
        "labels: 1 answer(s) carry 'spam', which is no longer a leaf in the draft while answers must be leaves: "
        "declare a split or deprecate for 'spam', or allow non-leaf answers"]
    assert problems_of(world, {**new, "allow_non_leaf": True}, []) == []


def test_migration_shape_errors_are_refused_at_save_and_write_nothing(world: dict[str, Any]) -> None:
    project = world["project"]
    cases = [
        ([{"kind": "split", "sources": ["hate"], "targets": ["x"]}],
         "migrations[0]: split takes one source and two or more targets (A -> B | C)"),
        ([{"kind": "merge", "sources": ["spam"], "targets": ["x"]}],
         "migrations[0]: merge takes two or more sources and one target (A + B -> C)"),
        ([{"kind": "rename", "sources": ["a", "b"], "targets": ["x"]}],
         "migrations[0]: rename takes one source and one target (A -> B)"),
        ([{"kind": "deprecate", "sources": ["a"], "targets": ["x"]}],
         "migrations[0]: deprecate takes one or more sources and no targets (A -> nothing)"),
        ([{"kind": "explode", "sources": ["a"]}], "migrations[0].kind: must be one of rename, merge, split, deprecate"),
        ([{"kind": "deprecate", "sources": ["a"], "requeue_priority": 0}],
         "migrations[0].requeue_priority: must be an integer from 1 to 1000"),
    ]
    for migrations, message in cases:
        with pytest.raises(ValidationFailed) as caught:
            taxonomy_draft_save(actor=world["lead"], project=project, document=V1, migrations=migrations)
        assert caught.value.message == message
    assert not TaxonomyVersion.objects.filter(project=project, status="draft").exists()


# --- All or nothing ------------------------------------------------------------------------------------------


def test_a_failure_mid_publish_leaves_no_half_published_version(world: dict[str, Any]) -> None:
    project, (r0, r1, _) = world["project"], world["reviewers"]
    its = items(project, "a", "b")
    a = annotate(project, r0, its["a"], ["hate"])
    b = annotate(project, r1, its["b"], ["spam"])
    taxonomy_draft_save(
        actor=world["lead"], project=project,
        document=doc(lab("ok"), lab("junk"), lab("scam"), lab("hate/slur"), lab("hate/threat"), lab("other")),
        migrations=[{"kind": "rename", "sources": ["spam"], "targets": ["junk"]},
                    {"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"],
                     "requeue_priority": 3}],
    )
    before_state, audit_before = state(project), AuditEvent.objects.count()
    real_update = Item.objects.filter

    # Annotations are mapped, then the item re-queue blows up: everything before it must roll back.
    def exploding_filter(*args: Any, **kwargs: Any) -> Any:
        if "id__in" in kwargs:
            raise RuntimeError("disk full")
        return real_update(*args, **kwargs)

    with mock.patch.object(Item.objects, "filter", side_effect=exploding_filter), \
            pytest.raises(RuntimeError, match="disk full"):
        taxonomy_draft_publish(actor=world["lead"], project=project, changelog="will fail")

    assert (mapped(a), mapped(b)) == ((None, None), (None, None))
    assert state(project) == before_state
    assert AuditEvent.objects.count() == audit_before
    assert list(TaxonomyVersion.objects.filter(project=project).values_list("number", "status").order_by("id")) == [
        (1, "published"), (None, "draft")]
    assert current_number(project) == 1

    # The same draft publishes cleanly afterwards.
    v2 = taxonomy_draft_publish(actor=world["lead"], project=project, changelog="second try")
    assert (v2.number, mapped(a), mapped(b)) == (2, (None, 2), (["junk"], 2))
    assert state(project) == {"a": (3, 2, 1), "b": (0, 1, 1)}


def test_failure_in_the_final_project_update_also_rolls_back(world: dict[str, Any]) -> None:
    project, r0 = world["project"], world["reviewers"][0]
    a = annotate(project, r0, items(project, "a")["a"], ["spam"])
    taxonomy_draft_save(actor=world["lead"], project=project,
                        document=doc(lab("ok"), lab("junk"), lab("scam"), lab("hate"), lab("other")),
                        migrations=[{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}])
    with mock.patch.object(taxonomy_services, "request_retrain", side_effect=RuntimeError("broker down")), \
            pytest.raises(RuntimeError):
        taxonomy_draft_publish(actor=world["lead"], project=project, changelog="x")
    assert mapped(a) == (None, None)
    assert not TaxonomyVersion.objects.filter(project=project, number=2).exists()
    assert not AuditEvent.objects.filter(project=project, action__in=["taxonomy.publish", "taxonomy.migrate"],
                                         data__number=2).exists()


def test_publish_audits_the_publish_and_each_migration(world: dict[str, Any]) -> None:
    project, r0 = world["project"], world["reviewers"][0]
    annotate(project, r0, items(project, "a")["a"], ["spam"])
    publish(world, doc(lab("ok"), lab("junk"), lab("scam"), lab("hate", deprecated=True), lab("other")),
            [{"kind": "rename", "sources": ["spam"], "targets": ["junk"]},
             {"kind": "deprecate", "sources": ["hate"], "requeue_priority": 2}], changelog="tidy up")
    events = list(AuditEvent.objects.filter(project=project, action__startswith="taxonomy.")
                  .order_by("id").values_list("action", "data"))
    assert [action for action, _ in events] == [
        "taxonomy.publish", "taxonomy.draft_save", "taxonomy.publish", "taxonomy.migrate", "taxonomy.migrate"]
    publish_data = events[2][1]
    assert {k: publish_data[k] for k in ("number", "based_on", "changelog", "migrations", "annotations_mapped",
                                         "annotations_requeued", "items_requeued")} == {
        "number": 2, "based_on": 1, "changelog": "tidy up", "migrations": 2, "annotations_mapped": 1,
        "annotations_requeued": 0, "items_requeued": 0}
    assert events[3][1] == {"from": 1, "to": 2, "kind": "rename", "sources": ["spam"], "targets": ["junk"],
                            "requeue_priority": 0, "annotations_mapped": 1, "annotations_requeued": 0,
                            "items_requeued": 0}
    assert events[4][1]["kind"] == "deprecate"


def test_published_version_is_immutable_and_draft_must_be_current(world: dict[str, Any]) -> None:
    from labeling.models import ImmutableVersionError

    v2 = publish(world, doc(lab("ok"), lab("spam"), lab("scam"), lab("hate"), lab("other"), lab("new")), [])
    with pytest.raises(ImmutableVersionError):
        Label.objects.filter(version=v2).first().save()  # type: ignore[union-attr]
    # A draft left behind by a publish that happened around it is refused (409) until re-saved.
    taxonomy_draft_save(actor=world["lead"], project=world["project"], document=V1 | {"labels": V1["labels"] +
                        [lab("new")]}, migrations=[])
    TaxonomyVersion.objects.filter(project=world["project"], status="draft").update(based_on=None)
    with pytest.raises(Conflict):
        taxonomy_draft_publish(actor=world["lead"], project=world["project"], changelog="x")
    assert Project.objects.get(pk=world["project"].pk).current_taxonomy_version_id == v2.pk


# --- A submit racing a publish (PostgreSQL row locks) ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
# A submit racing a publish, on real concurrent transactions: tests/labeling/services/test_publish_concurrency.py.


def test_submit_on_a_lease_taken_before_a_publish_is_mapped_at_once(world: dict[str, Any]) -> None:
    """The submit path calls annotation_map_forward: the answer is valid under the lease's version and is
    mapped onto the new one in the same transaction, not left for the next publish."""
    from labeling.services.annotations import annotation_submit
    from labeling.services.queues import queue_checkout_next

    project, reviewer = world["project"], world["reviewers"][0]
    items(project, "only")
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    publish(world, doc(lab("ok"), lab("junk"), lab("scam"), lab("hate"), lab("other")),
            [{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}])

    annotation, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"])

    assert created is True
    annotation.refresh_from_db()
    assert annotation.labels == ["spam"]
    assert annotation.taxonomy_version.number == 1
    assert mapped(annotation) == (["junk"], 2)
