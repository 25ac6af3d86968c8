"""The dashboard's label-error panel in a real browser: suspicions found at retrain, routed and partly resolved
through the real queue, submit and adjudication, shown to a lead; saves docs/screenshots/dashboard-label-errors.png.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from labeling.models import Adjudication
from labeling.services.adjudication import adjudication_decide
from labeling.services.annotations import annotation_submit
from labeling.services.label_errors import label_errors_sync
from labeling.services.queues import queue_checkout_next
from learning.services import model_version_train
from tests.browser import log_in, wait_js
from tests.labeling.services.label_errors_support import noisy_project

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_screenshot_of_the_label_error_panel(page: Any) -> None:
    world = noisy_project("noisy-sms")
    project, items, lead = world["project"], world["items"], world["lead"]
    assert model_version_train(project_id=project.pk).outcome == "activated"
    label_errors_sync(project_id=project.pk)
    # dan re-checks item 0 and agrees with the answer (kept); item 2 still waits for him; the lead corrects item 7.
    lease = queue_checkout_next(project=project, reviewer=world["dan"], rng=random.Random(0))
    assert lease is not None and lease.item_id == items[0].pk
    annotation_submit(lease_id=lease.pk, reviewer=world["dan"], labels=["ham"])
    adjudication_decide(actor=lead, project=project, adjudication_id=Adjudication.objects.get(item=items[7]).pk,
                        labels=["ham"])
    label_errors_sync(project_id=project.pk)

    log_in(page, "lead", next_url=f"/projects/{project.slug}/dashboard/")
    wait_js(page, "() => document.body.dataset.dashboard === 'ready'", timeout=30)
    assert page.errors == []
    assert page.is_hidden("#dash-error")
    counts = page.eval_on_selector_all("#label-errors-counts li", "(lis) => lis.map((li) => li.textContent)")
    assert counts == ["0 found", "1 with a reviewer", "0 with a lead", "1 confirmed errors", "1 answers kept",
                      "0 skipped"]
    rows = page.eval_on_selector_all("#label-errors-table tbody tr", """(rows) => rows.map((r) => [
        r.cells[0].querySelector('a').textContent, r.cells[1].textContent, r.cells[2].textContent,
        r.cells[5].textContent])""")
    assert sorted(rows) == [["item-0", "ham", "spam", "answer kept"],
                            ["item-2", "ham", "spam", "waiting for another answer"],
                            ["item-7", "spam", "ham", "error: corrected to ham"]]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#label-errors-panel").screenshot(path=str(SCREENSHOTS / "dashboard-label-errors.png"))
