"""Match banks on the labelling page, in real Chromium against the real queue API: a bank built in one project,
exported (hashes and signatures only) and imported into another, puts that project's copy of the campaign at the
front of the queue with its evidence shown as text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labeling.models import Item
from labeling.services.banks import bank_confirm, bank_create, bank_export, bank_import
from learning.services.clusters import project_cluster_items
from tests.browser import log_in
from tests.factories import ItemFactory, member
from tests.frontend.test_labelling_browser import SCREENSHOTS, make_sms_project, wait_for_item

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PARCEL = "Royal Mail: your parcel is held, a 1.99 GBP fee is due. Pay at royalmail-redelivery.com/track today"


def test_an_imported_bank_match_is_served_first_with_its_evidence_as_text(page: Any) -> None:
    source, _ = make_sms_project(slug="bank-source", n_items=0, embedder="hashing")
    ItemFactory(project=source, external_id="src-1", text=PARCEL)
    project_cluster_items(project_id=source.pk)
    lead = member(source, username="lead", role="policy_lead")
    # A bank name that looks like markup must arrive as text.
    bank = bank_create(actor=lead, project=source, name="Parcel <b>fee</b> scams", label_key="spam")
    bank_confirm(actor=lead, bank=bank, item_ids=[Item.objects.get(project=source).pk])
    document = json.loads(json.dumps(bank_export(actor=lead, bank=bank)))
    assert not {"royal", "redelivery", "held"} & set(json.dumps(document).lower().replace('"', " ").split())

    project, _ = make_sms_project(slug="bank-label", n_items=6, embedder="hashing")
    ItemFactory(project=project, external_id="sms-9001", text=PARCEL.replace("1.99", "2.49") + " or it returns")
    target_lead = member(project, username="lead2", role="policy_lead")
    bank_import(actor=target_lead, project=project, payload=document)
    project_cluster_items(project_id=project.pk)

    log_in(page, "rev", next_url="/projects/bank-label/label/")
    # Imported last, but boosted by the bank: served first.
    assert wait_for_item(page) == "sms-9001"
    assert page.text_content("#selection-reason") == "Matched a match bank: confirm it"
    assert page.is_visible("#bank-matches")
    assert page.text_content("#bank-match-list li") == (
        "Parcel <b>fee</b> scams · known violating for label spam · near match to entry "
        f"{Item.objects.get(external_id='sms-9001').bank_matches.get().entry_id} (similarity 0.88)")
    assert page.query_selector("#bank-match-list b") is None
    assert page.errors == [] and page.evaluate("window.__csp") == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labelling-bank-match.png"), full_page=False)
