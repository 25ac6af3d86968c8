"""The labelling page with PII masking, in Chromium: reviewers see tokens; a lead reveals, and it is audited."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import AuditEvent, Project
from labeling.services.privacy import project_privacy_update
from tests.browser import log_in, wait_js
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RAW = "write to jane.doe@example.com or +44 7700 900123"
MASKED = "write to [email] or [phone]"


def _project() -> Project:
    project = ProjectFactory(slug="pii", taxonomy=SMS_TAXONOMY)
    project_privacy_update(actor=None, project=project, mask_pii=True, mask_detectors=["email", "phone", "url"])
    ItemFactory(project=project, external_id="p1", text=RAW, meta={"from": "jane.doe@example.com"})
    return project


def _text(page: Any, selector: str) -> str:
    value: str = page.text_content(selector) or ""
    return value


def test_a_lead_reveals_the_masked_text_and_the_reveal_is_audited(page: Any) -> None:
    project = _project()
    lead = member(project, username="lead", role="policy_lead")
    log_in(page, "lead", next_url="/projects/pii/label/")
    wait_js(page, "(masked) => document.getElementById('item-text').textContent === masked", MASKED)
    assert "[email]" in _text(page, "#item-meta")
    wait_js(page, "() => !document.getElementById('reveal-btn').hidden")
    page.once("dialog", lambda dialog: dialog.accept("report 77"))
    page.click("#reveal-btn")
    wait_js(page, "(raw) => document.getElementById('item-text').textContent === raw", RAW)
    assert "jane.doe@example.com" in _text(page, "#item-meta")
    event = AuditEvent.objects.get(action="item.reveal")
    assert (event.actor_id, event.data["reason"]) == (lead.pk, "report 77")


def test_a_reviewer_sees_only_the_masked_text_and_no_reveal(page: Any) -> None:
    project = _project()
    member(project, username="rev", role="reviewer")
    log_in(page, "rev", next_url="/projects/pii/label/")
    wait_js(page, "(masked) => document.getElementById('item-text').textContent === masked", MASKED)
    assert page.query_selector("#reveal-btn") is None
    html = page.content()
    assert "jane.doe" not in html and "900123" not in html
    assert not AuditEvent.objects.filter(action="item.reveal").exists()
