"""labeling/services/propagation.py: per-label policy, propagation above the threshold, the verification share, the
measured precision, and re-evaluation after an undo or an adjudication of the source, through the real queue and
submit (the worker's task is run as the worker runs it, with the message the submit sent)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from labeling.models import (
    Adjudication,
    Annotation,
    AnswerSource,
    AuditEvent,
    ClusterKind,
    ClusterMember,
    Item,
    Project,
    PropagationPolicy,
)
from labeling.selectors.propagation import propagation_precision
from labeling.services.adjudication import adjudication_decide, adjudication_open
from labeling.services.annotations import annotation_submit, annotation_undo
from labeling.services.errors import ValidationFailed
from labeling.services.propagation import (
    TASK_NAME,
    propagation_policies,
    propagation_policy_set,
)
from labeling.services.queues import queue_checkout_next
from labeling.stats.proportions import wilson_interval
from labeling.tasks import propagation_reevaluate_task
from learning.core.propagation import verification_pick
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items

# Real commits: the task is sent by on_commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

TAXONOMY: dict[str, Any] = {
    "name": "Policy",
    "multi_label": False,
    "labels": [{"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam"}, {"key": "threat", "name": "Threat"}],
}


@pytest.fixture(autouse=True)
def retrains(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    requested: list[int] = []
    monkeypatch.setattr("learning.scheduling.request_retrain",
                        lambda *, project_id: transaction.on_commit(lambda: requested.append(project_id)))
    return requested


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """The task messages sent after commit (the broker stand-in: the tests then run the task as the worker does)."""
    from celery import current_app

    messages: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args: messages.append((name, args)))
    return messages


def cluster(representative: Item, members: list[tuple[Item, float]]) -> None:
    """Cluster rows as the clustering worker writes them, with chosen similarities."""
    rows = [(representative, ClusterKind.REPRESENTATIVE, 1.0), *((item, ClusterKind.NEAR, similarity)
                                                                 for item, similarity in members)]
    ClusterMember.objects.bulk_create([
        ClusterMember(item=item, project_id=representative.project_id, representative=representative, kind=kind,
                      similarity=similarity, exact_key="0" * 32, minhash=b"") for item, kind, similarity in rows])


def setup(n_members: int, similarities: list[float] | None = None, *, slug: str = "prop") -> dict[str, Any]:
    project = ProjectFactory(slug=slug, taxonomy=TAXONOMY, overlap=1)
    items = add_items(project, [f"text {n}" for n in range(n_members + 1)])
    # The representative first in the random order, so the queue serves it first.
    Item.objects.filter(pk=items[0].pk).update(random_key=0.0)
    sims = similarities if similarities is not None else [1.0] * n_members
    cluster(items[0], list(zip(items[1:], sims, strict=True)))
    return {"project": project, "rep": items[0], "members": items[1:],
            "ana": member(project, username="ana", role="reviewer"),
            "bob": member(project, username="bob", role="reviewer"),
            "lead": member(project, username="lead", role="policy_lead")}


def answer_representative(world: dict[str, Any], labels: list[str]) -> Annotation:
    lease = queue_checkout_next(project=world["project"], reviewer=world["ana"])
    assert lease is not None and lease.item_id == world["rep"].pk
    annotation, created = annotation_submit(lease_id=lease.pk, reviewer=world["ana"], labels=labels)
    assert created
    return annotation


def run(sent: list[tuple[str, list[int]]]) -> list[dict[str, int]]:
    """Run every sent task as the worker would, and forget the messages."""
    results = [propagation_reevaluate_task(*args) for name, args in sent if name == TASK_NAME]
    sent.clear()
    return results


def propagated(project: Project) -> dict[int, tuple[list[str], float | None, int | None, bool]]:
    return {item_id: (labels, similarity, source, verification) for item_id, labels, similarity, source, verification
            in Annotation.objects.filter(project=project, source=AnswerSource.PROPAGATED)
            .values_list("item_id", "labels", "similarity", "propagated_from_id", "verification")}


def n_done(items: list[Item]) -> list[int]:
    by_id = dict(Item.objects.filter(pk__in=[item.pk for item in items]).values_list("id", "n_done"))
    return [by_id[item.pk] for item in items]


def test_propagates_to_members_at_or_above_the_threshold_only(sent: list[Any]) -> None:
    world = setup(3, [0.95, 0.85, 0.6])
    propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="propagate",
                           threshold=0.85, verification_share=0.0)
    source = answer_representative(world, ["spam"])
    assert sent == [(TASK_NAME, [world["rep"].pk])]  # after the submit committed, by id
    assert run(sent) == [{"created": 2, "relabelled": 0, "withdrawn": 0}]
    first, second, far = world["members"]
    assert propagated(world["project"]) == {first.pk: (["spam"], 0.95, source.pk, False),
                                            second.pk: (["spam"], 0.85, source.pk, False)}
    assert set(Annotation.objects.filter(source=AnswerSource.PROPAGATED).values_list("reviewer_id", flat=True)) == {
        world["ana"].pk}
    assert n_done([world["rep"], first, second, far]) == [1, 1, 1, 0]
    # Call twice, effect once.
    assert propagation_reevaluate_task(world["rep"].pk) == {"created": 0, "relabelled": 0, "withdrawn": 0}
    assert Annotation.objects.filter(source=AnswerSource.PROPAGATED).count() == 2
    # The queue serves bob only the member below the threshold, then nothing.
    lease = queue_checkout_next(project=world["project"], reviewer=world["bob"])
    assert lease is not None and lease.item_id == far.pk
    annotation_submit(lease_id=lease.pk, reviewer=world["bob"], labels=["ok"])
    assert queue_checkout_next(project=world["project"], reviewer=world["bob"]) is None
    event = AuditEvent.objects.filter(action="propagation.reevaluate").get()
    assert event.data == {"representative_id": world["rep"].pk, "created": 2, "relabelled": 0, "withdrawn": 0,
                          "labels": ["spam"], "source_annotation_id": source.pk}


def test_the_policy_is_per_label(sent: list[Any]) -> None:
    world = setup(2)
    propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="propagate",
                           threshold=0.5, verification_share=0.0)
    answer_representative(world, ["ok"])  # "ok" is off: nothing propagates
    assert run(sent) == [{"created": 0, "relabelled": 0, "withdrawn": 0}]
    assert propagated(world["project"]) == {}
    assert n_done(world["members"]) == [0, 0]
    assert [(row["label"], row["mode"]) for row in propagation_policies(project=world["project"])] == [
        ("ok", "off"), ("spam", "propagate"), ("threat", "off")]


def test_a_project_that_propagates_nothing_sends_no_task(sent: list[Any]) -> None:
    world = setup(2)
    answer_representative(world, ["spam"])
    assert sent == []


def test_policy_changes_are_validated_and_audited(sent: list[Any]) -> None:
    world = setup(1)
    with pytest.raises(ValidationFailed, match="not a label of the current taxonomy"):
        propagation_policy_set(actor=world["lead"], project=world["project"], label="nope", mode="propagate")
    with pytest.raises(ValidationFailed, match="threshold: must lie between 0 and 1"):
        propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="propagate",
                               threshold=1.5)
    with pytest.raises(ValidationFailed, match="mode: must be one of off, suggest, propagate"):
        propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="always")
    assert not PropagationPolicy.objects.exists()
    propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="propagate",
                           threshold=0.9, verification_share=0.1)
    event = AuditEvent.objects.filter(action="propagation.policy").get()
    assert event.data == {"label": "spam", "mode": "propagate", "threshold": 0.9, "verification_share": 0.1,
                          "previous": {"label": "spam", "mode": "off", "threshold": 0.8,
                                       "verification_share": 0.05}}


def test_a_fixed_share_is_verified_by_a_human_and_stays_in_the_queue(sent: list[Any]) -> None:
    world = setup(40)
    project = world["project"]
    propagation_policy_set(actor=world["lead"], project=project, label="spam", mode="propagate",
                           threshold=0.8, verification_share=0.25)
    answer_representative(world, ["spam"])
    run(sent)
    picked = {item.pk for item in world["members"] if verification_pick(item.pk, share=0.25, salt=str(project.pk))}
    assert 0 < len(picked) < 40
    rows = propagated(project)
    assert set(rows) == {item.pk for item in world["members"]}  # every member got its propagated answer
    assert {item_id for item_id, row in rows.items() if row[3]} == picked
    # A verification item does not count towards n_done: it is still open, and only it is served.
    assert n_done(world["members"]) == [0 if item.pk in picked else 1 for item in world["members"]]
    served = set()
    while (lease := queue_checkout_next(project=project, reviewer=world["bob"])) is not None:
        served.add(lease.item_id)
        annotation_submit(lease_id=lease.pk, reviewer=world["bob"], labels=["spam"])
    assert served == picked
    assert n_done(world["members"]) == [1] * 40
    # The same members are picked on a re-evaluation (undo and redo): the pick is a hash of the item id.
    assert propagation_reevaluate_task(world["rep"].pk) == {"created": 0, "relabelled": 0, "withdrawn": 0}


def test_precision_per_label_is_verified_agreements_over_verified_with_a_wilson_interval(sent: list[Any]) -> None:
    world = setup(5)
    project = world["project"]
    propagation_policy_set(actor=world["lead"], project=project, label="spam", mode="propagate",
                           threshold=0.8, verification_share=1.0)  # every member verified
    answer_representative(world, ["spam"])
    run(sent)
    assert propagation_precision(project=project) == [
        {"label": "spam", "propagated": 5, "verified": 0, "agreements": 0, "precision": None, "low": None,
         "high": None}]
    answers = iter([["spam"], ["ok"], ["spam"], ["spam"]])  # bob verifies four of the five, disagreeing once
    for _ in range(4):
        lease = queue_checkout_next(project=project, reviewer=world["bob"])
        assert lease is not None
        annotation_submit(lease_id=lease.pk, reviewer=world["bob"], labels=next(answers))
    low, high = wilson_interval(3, 4)
    expected = [{"label": "spam", "propagated": 5, "verified": 4, "agreements": 3, "precision": 0.75, "low": low,
                 "high": high}]
    assert propagation_precision(project=project) == expected
    # The stats API serves the same figure.
    client = APIClient()
    client.force_authenticate(world["lead"])
    assert client.get(f"/api/projects/{project.slug}/stats/").json()["propagation"] == expected
    # The quality figures count human judgements only: the verified items' two human-side answers are bob's alone.
    assert client.get(f"/api/projects/{project.slug}/stats/").json()["agreement"]["n_units"] == 0


def test_undoing_the_source_withdraws_what_it_propagated_and_requeues_the_members(sent: list[Any]) -> None:
    world = setup(2)
    propagation_policy_set(actor=world["lead"], project=world["project"], label="spam", mode="propagate",
                           threshold=0.8, verification_share=0.0)
    source = answer_representative(world, ["spam"])
    run(sent)
    assert n_done(world["members"]) == [1, 1]
    assert source.lease_id is not None
    annotation_undo(lease_id=source.lease_id, reviewer=world["ana"])
    assert sent == [(TASK_NAME, [world["rep"].pk])]
    assert run(sent) == [{"created": 0, "relabelled": 0, "withdrawn": 2}]
    assert propagated(world["project"]) == {}
    assert n_done([world["rep"], *world["members"]]) == [0, 0, 0]
    # Answered again (ana still holds the lease the undo gave back): propagated again, from the new answer.
    again, _ = annotation_submit(lease_id=source.lease_id, reviewer=world["ana"], labels=["spam"])
    assert run(sent) == [{"created": 2, "relabelled": 0, "withdrawn": 0}]
    assert {row[2] for row in propagated(world["project"]).values()} == {again.pk}


def test_adjudicating_the_source_relabels_or_withdraws_what_it_propagated(sent: list[Any]) -> None:
    world = setup(2)
    project = world["project"]
    for label in ("spam", "threat"):
        propagation_policy_set(actor=world["lead"], project=project, label=label, mode="propagate",
                               threshold=0.8, verification_share=0.0)
    source = answer_representative(world, ["spam"])
    run(sent)
    adjudication, _ = adjudication_open(actor=world["lead"], project=project, external_id=world["rep"].external_id)
    adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk, labels=["threat"])
    assert run(sent) == [{"created": 0, "relabelled": 2, "withdrawn": 0}]
    assert list(propagated(project).values()) == [(["threat"], 1.0, source.pk, False)] * 2
    # Revised to a label that does not propagate: withdrawn, and the members are back in the queue.
    adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk, labels=["ok"],
                        revise=True)
    assert run(sent) == [{"created": 0, "relabelled": 0, "withdrawn": 2}]
    assert n_done(world["members"]) == [0, 0]
    lease = queue_checkout_next(project=project, reviewer=world["bob"])
    assert lease is not None and lease.item_id in {item.pk for item in world["members"]}


def test_a_held_or_human_answered_member_is_left_to_the_human(sent: list[Any]) -> None:
    world = setup(2)
    project = world["project"]
    propagation_policy_set(actor=world["lead"], project=project, label="spam", mode="propagate",
                           threshold=0.8, verification_share=0.0)
    answer_representative(world, ["spam"])
    # Before the worker runs, bob is handed a member (the representative is answered, so its members are served).
    held = queue_checkout_next(project=project, reviewer=world["bob"])
    assert held is not None
    assert run(sent) == [{"created": 1, "relabelled": 0, "withdrawn": 0}]
    assert held.item_id not in propagated(project)
    assert n_done(world["members"]).count(1) == 1  # n_done + holding <= n_required on both members


def export_rows(project: Project, **params: Any) -> dict[str, tuple[list[str], str, int]]:
    """external_id -> (labels, label_source, n_annotators) of a JSON Lines export."""
    import json

    from labeling.services.exports import export_params_parse, export_prepare, export_stream

    prepared = export_prepare(project=project, params=export_params_parse({"format": "jsonl", **params}),
                              actor=None)
    rows = [json.loads(line) for line in b"".join(export_stream(prepared)).splitlines()]
    return {row["external_id"]: (row["labels"], row["label_source"], row["n_annotators"]) for row in rows}


@pytest.mark.parametrize("path", ["sql", "python"])
def test_exports_tell_human_propagated_and_adjudicated_labels_apart_and_can_exclude_propagated(
        sent: list[Any], monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    from labeling.services.exports import judge as export_judge
    from labeling.services.exports import read as export_read

    if path == "python":
        monkeypatch.setattr(export_judge, "_aggregates", lambda prepared, *, light, reviewers=False:
                            export_read._python_aggregates(prepared, light=light))
    world = setup(3, slug=f"prop-export-{path}")
    project = world["project"]
    propagation_policy_set(actor=world["lead"], project=project, label="spam", mode="propagate",
                           threshold=0.8, verification_share=1.0)  # every member is verified
    answer_representative(world, ["spam"])
    run(sent)
    lease = queue_checkout_next(project=project, reviewer=world["bob"])
    assert lease is not None
    first = next(item for item in world["members"] if item.pk == lease.item_id)
    second, third = (item for item in world["members"] if item.pk != lease.item_id)
    annotation_submit(lease_id=lease.pk, reviewer=world["bob"], labels=["ok"])  # bob verifies one, disagreeing
    adjudication, _ = adjudication_open(actor=world["lead"], project=project, external_id=second.external_id)
    adjudication_decide(actor=world["lead"], project=project, adjudication_id=adjudication.pk, labels=["threat"])
    run(sent)  # the adjudicated item is a member, not a representative: nothing to re-evaluate
    ids = [item.external_id for item in (world["rep"], first, second, third)]
    # A verification that disagrees with the propagated answer sends the item to a lead (the submit's adjudication
    # check reads both answers), and the export reads the human's answer only: it waits for the lead.
    assert Adjudication.objects.get(item=first).reason == "disagreement"
    assert export_rows(project) == {
        ids[0]: (["spam"], "majority", 1), ids[1]: ([], "pending_adjudication", 1),
        ids[2]: (["threat"], "adjudication", 1), ids[3]: (["spam"], "propagated", 1)}
    assert export_rows(project, propagated="exclude") == {
        ids[0]: (["spam"], "majority", 1), ids[1]: ([], "pending_adjudication", 1),
        ids[2]: (["threat"], "adjudication", 0)}
    # The command's flag is the same parameter.
    import json
    import tempfile
    from pathlib import Path

    from django.core.management import call_command

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "export.jsonl"
        call_command("export", "--project", project.slug, "--format", "jsonl", "--out", str(out),
                     "--exclude-propagated", stdout=open("/dev/null", "w"))  # noqa: SIM115 - a summary only
        assert sorted(json.loads(line)["external_id"] for line in out.read_text().splitlines()) == sorted(ids[:3])


def test_with_suggest_members_are_served_with_the_representatives_label(sent: list[Any]) -> None:
    world = setup(1)
    project = world["project"]
    project.suggestion_holdout_rate = 0.0
    project.save(update_fields=["suggestion_holdout_rate"])
    propagation_policy_set(actor=world["lead"], project=project, label="spam", mode="suggest")
    answer_representative(world, ["spam"])
    assert run(sent) == [{"created": 0, "relabelled": 0, "withdrawn": 0}]  # suggest never writes answers
    lease = queue_checkout_next(project=project, reviewer=world["bob"])
    assert lease is not None and lease.item_id == world["members"][0].pk
    assert lease.suggestion == {"label": "spam", "confidence": 1.0, "source": "cluster"}
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=world["bob"], labels=["spam"])
    assert annotation.suggestion_shown == {"label": "spam", "confidence": 1.0, "source": "cluster"}
    assert annotation.source == AnswerSource.HUMAN
