"""Match banks (labeling/services/banks.py, matching in learning/services/banks.py): confirm, match, deconfirm,
export and import, with exact outcomes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from labeling.models import (
    BANK_BOOST,
    AuditEvent,
    BankEntry,
    BankMatch,
    ClusterMember,
    Item,
    MatchBank,
)
from labeling.services.banks import (
    bank_confirm,
    bank_create,
    bank_entry_deconfirm,
    bank_export,
    bank_import,
    item_bank_evidence,
)
from labeling.services.errors import NotFound, ValidationFailed
from labeling.services.queues import queue_checkout_next
from learning.services.clusters import project_cluster_items
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items

pytestmark = pytest.mark.django_db

SCAM = "URGENT! You have won a 2000 pound prize. Call 09061701461 now to claim, code KL341, valid 12 hours"
# Same normalised text (digits are placeholders): an exact match.
SCAM_NEW_NUMBER = SCAM.replace("09061701461", "08000930705")
# Two words more: a near match.
SCAM_REWORDED = SCAM + " reply today"
OTHER = "are we still on for lunch tomorrow at the usual place?"


def _world(slug: str = "bank") -> tuple[Any, Any, list[Item]]:
    project = ProjectFactory(slug=slug, embedder="hashing", overlap=1)
    lead = member(project, username=f"{slug}-lead", role="policy_lead")
    items = add_items(project, [SCAM, OTHER])
    project_cluster_items(project_id=project.pk)
    return project, lead, items


def _matches(project: Any) -> list[tuple[str, int, str, float, bool]]:
    return [(m.item.external_id, m.entry_id, m.kind, m.similarity, m.withdrawn_at is None)
            for m in BankMatch.objects.filter(project=project).select_related("item").order_by("item_id", "entry_id")]


def test_confirm_an_item_stores_its_signature_and_provenance_only() -> None:
    project, lead, (scam, _other) = _world()
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad")
    result = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
    entry = BankEntry.objects.get()
    member_row = ClusterMember.objects.get(item=scam)
    assert result == {"bank": bank.pk, "items": [scam.pk], "signatures": 1, "entries": [entry.pk]}
    assert (entry.exact_key, bytes(entry.minhash), entry.kind, entry.status, entry.source_item_id,
            entry.confirmed_by_id) == (member_row.exact_key, bytes(member_row.minhash), "item", "confirmed",
                                       scam.pk, lead.pk)
    # Confirming again is a no-op (one entry per exact key), and is still audited.
    assert bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"] == []
    assert BankEntry.objects.count() == 1
    assert list(AuditEvent.objects.filter(project=project, action__startswith="bank.").order_by("id")
                .values_list("action", flat=True)) == ["bank.create", "bank.confirm", "bank.confirm"]


def test_confirm_a_cluster_takes_every_distinct_signature_of_it() -> None:
    project = ProjectFactory(slug="bank-clu", embedder="hashing", overlap=1)
    lead = member(project, username="lead", role="policy_lead")
    items = add_items(project, [SCAM, SCAM_NEW_NUMBER, SCAM_REWORDED, OTHER])
    project_cluster_items(project_id=project.pk)
    assert list(ClusterMember.objects.order_by("item_id").values_list("kind", flat=True)) == [
        "representative", "exact", "near", "representative"]
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad")
    # Confirming a member with its cluster: three items, two distinct normalised texts, two entries.
    result = bank_confirm(actor=lead, bank=bank, item_ids=[items[2].pk], with_cluster=True)
    assert (result["signatures"], len(result["entries"])) == (3, 2)
    assert list(BankEntry.objects.order_by("pk").values_list("kind", "source_item_id")) == [
        ("cluster", items[0].pk), ("cluster", items[2].pk)]


def test_unclustered_or_foreign_items_are_refused_and_nothing_is_written() -> None:
    project, lead, _items = _world()
    _, _, other_items = _world("bank-other")
    fresh = add_items(project, ["not clustered yet"], prefix="fresh")[-1]
    bank = bank_create(actor=lead, project=project, name="B", label_key="bad")
    with pytest.raises(ValidationFailed, match=f"item {fresh.pk} has no signature yet"):
        bank_confirm(actor=lead, bank=bank, item_ids=[fresh.pk])
    with pytest.raises(NotFound, match=f"no item {other_items[0].pk} in project 'bank'"):
        bank_confirm(actor=lead, bank=bank, item_ids=[other_items[0].pk])
    assert BankEntry.objects.count() == 0


def test_new_imports_match_exactly_and_nearly_and_are_boosted_for_confirmation() -> None:
    project, lead, (scam, other) = _world()
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad", threshold=0.8)
    entry_id = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"][0]
    project_cluster_items(project_id=project.pk)  # the pass confirm asked for: sweeps the project for the new entry
    assert _matches(project) == [("item-0", entry_id, "exact", 1.0, True)]
    new = add_items(project, [SCAM_NEW_NUMBER, SCAM_REWORDED, "see you at the gym"], prefix="new")[2:]
    project_cluster_items(project_id=project.pk)
    assert _matches(project) == [("item-0", entry_id, "exact", 1.0, True),
                                 ("new-0", entry_id, "exact", 1.0, True),
                                 ("new-1", entry_id, "near", 0.875, True)]
    assert dict(Item.objects.filter(project=project).values_list("external_id", "boost")) == {
        "item-0": BANK_BOOST, "item-1": 0, "new-0": BANK_BOOST, "new-1": BANK_BOOST, "new-2": 0}
    # A match never answers for a person: no item gained an answer.
    assert set(Item.objects.filter(project=project).values_list("n_done", flat=True)) == {0}
    # Call twice, effect once: a rerun writes nothing new.
    project_cluster_items(project_id=project.pk)
    assert BankMatch.objects.count() == 3
    # Boosted items are served first, in id order (the copies wait for their representative, the cluster rule).
    lease = queue_checkout_next(project=project, reviewer=member(project, username="ana", role="reviewer"))
    assert lease is not None and (lease.item_id, lease.selection_reason) == (scam.pk, "bank_match")
    assert [(e["bank"], e["label"], e["polarity"], e["entry"], e["kind"], e["similarity"])
            for e in item_bank_evidence(project=project, item_id=new[1].pk)] == [
        ("Prize scams", "bad", "violating", entry_id, "near", 0.875)]
    assert item_bank_evidence(project=project, item_id=other.pk) == []


def test_a_benign_bank_shows_its_evidence_but_does_not_boost() -> None:
    project, lead, (scam, _other) = _world()
    bank = bank_create(actor=lead, project=project, name="Known fine", label_key="ok", polarity="benign")
    entry_id = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"][0]
    add_items(project, [SCAM_NEW_NUMBER], prefix="new")
    project_cluster_items(project_id=project.pk)
    assert _matches(project) == [("item-0", entry_id, "exact", 1.0, True), ("new-0", entry_id, "exact", 1.0, True)]
    assert set(Item.objects.filter(project=project).values_list("boost", flat=True)) == {0}


def test_deconfirm_withdraws_matches_and_boosts_and_a_rerun_does_not_bring_them_back() -> None:
    project, lead, (scam, other) = _world()
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad")
    entry_id = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"][0]
    new = add_items(project, [SCAM_NEW_NUMBER], prefix="new")[-1]
    # Another re-queue reason set its own boost on the unrelated item: deconfirm must leave it alone.
    Item.objects.filter(pk=other.pk).update(boost=7)
    project_cluster_items(project_id=project.pk)
    done_before = list(Item.objects.order_by("id").values_list("n_done", "n_required"))

    result = bank_entry_deconfirm(actor=lead, bank=bank, entry_id=entry_id)
    assert result == {"entry": entry_id, "withdrawn": 2, "items": [scam.pk, new.pk]}
    assert _matches(project) == [("item-0", entry_id, "exact", 1.0, False), ("new-0", entry_id, "exact", 1.0, False)]
    assert list(Item.objects.order_by("id").values_list("boost", flat=True)) == [0, 7, 0]
    assert list(Item.objects.order_by("id").values_list("n_done", "n_required")) == done_before
    assert BankEntry.objects.get().status == "deconfirmed"
    assert AuditEvent.objects.filter(action="bank.deconfirm", object_id=str(entry_id)).count() == 1
    # Twice: a no-op.
    assert bank_entry_deconfirm(actor=lead, bank=bank, entry_id=entry_id)["withdrawn"] == 0
    add_items(project, [SCAM.replace("09061701461", "07000000000")], prefix="later")
    project_cluster_items(project_id=project.pk)
    assert BankMatch.objects.filter(withdrawn_at__isnull=True).count() == 0
    # Confirming it again brings the matches back at the next pass.
    bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
    project_cluster_items(project_id=project.pk)
    assert BankMatch.objects.filter(withdrawn_at__isnull=True).count() == 3


def test_export_holds_hashes_and_signatures_never_text() -> None:
    project, lead, (scam, _other) = _world()
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad", threshold=0.75)
    bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
    document = bank_export(actor=lead, bank=bank)
    dumped = json.dumps(document)
    assert set(document) == {"format", "version", "signature", "name", "label", "polarity", "threshold", "entries"}
    assert [set(e) for e in document["entries"]] == [{"exact_key", "minhash", "kind", "confirmed_at"}]
    assert (document["format"], document["label"], document["threshold"]) == ("sift-match-bank", "bad", 0.75)
    for word in ("URGENT", "urgent", "prize", "09061701461", "KL341", "hours", scam.external_id, lead.username):
        assert word not in dumped


def test_import_into_a_second_project_matches_its_items_without_any_text_crossing() -> None:
    source, lead, (scam, _other) = _world("bank-src")
    bank = bank_create(actor=lead, project=source, name="Prize scams", label_key="bad")
    bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
    document = json.loads(json.dumps(bank_export(actor=lead, bank=bank)))  # through JSON, as it travels
    target = ProjectFactory(slug="bank-dst", embedder="hashing", overlap=1)
    target_lead = member(target, username="dst-lead", role="policy_lead")
    add_items(target, [SCAM_REWORDED, OTHER, SCAM_NEW_NUMBER], prefix="dst")
    imported = bank_import(actor=target_lead, project=target, payload=document)
    assert (imported["name"], imported["entries_confirmed"]) == ("Prize scams", 1)
    project_cluster_items(project_id=target.pk)
    entry = BankEntry.objects.get(bank__project=target)
    assert (entry.kind, entry.source_item_id) == ("imported", None)
    assert _matches(target) == [("dst-0", entry.pk, "near", 0.875, True), ("dst-2", entry.pk, "exact", 1.0, True)]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: [], "a bank document is a JSON object"),
    (lambda d: d | {"format": "hma"}, "not a bank document"),
    (lambda d: d | {"signature": d["signature"] | {"num_perm": 128}}, "signatures were made with another scheme"),
    (lambda d: d | {"label": "nope"}, "label 'nope' is not in the project's current taxonomy"),
    (lambda d: d | {"threshold": 1.5}, r"threshold must be a number in \(0, 1\]"),
    (lambda d: d | {"entries": [{"exact_key": "A" * 32, "minhash": ""}]}, r"entries\[0\].exact_key"),
    (lambda d: d | {"entries": [d["entries"][0], {**d["entries"][0], "minhash": "!!"}]},
     r"entries\[1\].minhash: not base64"),
    (lambda d: d | {"entries": [{**d["entries"][0], "minhash": "AAAA"}]}, r"entries\[0\].minhash: 3 bytes"),
    (lambda d: d | {"entries": [{**d["entries"][0], "text": SCAM}]}, "a bank holds no text"),
])
def test_a_bad_bank_document_is_refused_with_a_clear_error_and_nothing_changes(mutate: Any, message: str) -> None:
    project, lead, (scam, _other) = _world()
    bank = bank_create(actor=lead, project=project, name="Prize scams", label_key="bad")
    bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
    document = bank_export(actor=lead, bank=bank) | {"name": "Imported"}
    before = (MatchBank.objects.count(), BankEntry.objects.count(), AuditEvent.objects.count())
    with pytest.raises(ValidationFailed, match=message):
        bank_import(actor=lead, project=project, payload=mutate(document))
    assert (MatchBank.objects.count(), BankEntry.objects.count(), AuditEvent.objects.count()) == before


def test_queue_next_and_history_show_the_match_evidence_as_plain_values() -> None:
    project, lead, (scam, other) = _world()
    bank = bank_create(actor=lead, project=project, name="<b>Prize</b> scams", label_key="bad")
    entry_id = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"][0]
    new = add_items(project, [SCAM_REWORDED], prefix="new")[-1]
    Item.objects.filter(pk=other.pk).update(random_key=0.0)  # the fallback order would serve it first
    project_cluster_items(project_id=project.pk)
    # The boosted items come first: the representative (scam), then its near copy once the scam is done.
    client = APIClient()
    client.force_authenticate(member(project, username="ana", role="reviewer"))
    body = client.post(f"/api/projects/{project.slug}/queue/next").json()
    assert body["item"]["id"] == scam.pk
    assert [{k: v for k, v in m.items() if k != "matched_at"} for m in body["bank_matches"]] == [
        {"bank": "<b>Prize</b> scams", "bank_id": bank.pk, "label": "bad", "polarity": "violating",
         "entry": entry_id, "kind": "exact", "similarity": 1.0}]
    client.force_authenticate(lead)
    bank_entry_deconfirm(actor=lead, bank=bank, entry_id=entry_id)
    history = client.get(f"/api/projects/{project.slug}/items/{new.pk}/history/").json()
    assert [(m["bank"], m["kind"], m["similarity"], m["withdrawn_at"] is not None)
            for m in history["bank_matches"]] == [("<b>Prize</b> scams", "near", 0.875, True)]
