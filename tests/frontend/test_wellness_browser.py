"""Reviewer wellness and clusters on the labelling page, in real Chromium against the real queue API: a severe item
blurred until revealed (click or V), the cluster panel, the daily exposure budget, the break reminder."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Annotation, Item, Project, RankingEntry, RankingRow
from labeling.services.annotations import annotation_submit
from labeling.services.queues import queue_checkout_next
from labeling.services.wellness import wellness_policy_update
from learning.services.clusters import project_cluster_items
from tests.browser import log_in, wait_js
from tests.factories import ItemFactory
from tests.frontend.test_labelling_browser import SCREENSHOTS, make_sms_project, press, wait_for_item

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHISH = "URGENT: your Barclays account is locked. Verify your details at barclays-uk-help.com"


def _rank(project: Project, suggestions: dict[str, str]) -> None:
    """An active ranking serving ``suggestions``' items first, in that order, with those suggested labels."""
    items = {item.external_id: item for item in Item.objects.filter(project=project)}
    order = list(suggestions) + sorted(set(items) - set(suggestions))
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=1, start_rank=0, rows=[
        RankingRow(item_id=items[key].pk, score=round(0.9 - n * 0.01, 3), reason="uncertainty",
                   suggested_label=suggestions.get(key, "ham"), suggested_confidence=0.7)
        for n, key in enumerate(order)])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=1)


def _blurred(page: Any) -> bool:
    return bool(page.evaluate("() => document.getElementById('item-card').classList.contains('is-blurred')"))


def test_predicted_severe_item_is_blurred_until_v_and_the_cluster_panel_shows(page: Any) -> None:
    project, _ = make_sms_project(slug="well-blur", n_items=4, embedder="hashing")
    for n in range(4):
        ItemFactory(project=project, external_id=f"sms-2000{n}",
                    text=PHISH.replace("barclays-uk-help.com", f"barclays-help-{n}.com"))
    project_cluster_items(project_id=project.pk)
    _rank(project, {"sms-10231": "spam/phishing", "sms-10232": "ham", "sms-20000": "ham"})
    log_in(page, "rev", next_url="/projects/well-blur/label/")
    # sms-10231 is predicted phishing (severity 4, the policy's default threshold is 3): blurred, not clustered.
    assert wait_for_item(page) == "sms-10231"
    assert _blurred(page) and page.is_visible("#blur-cover")
    assert page.is_hidden("#cluster")
    assert page.text_content("#blur-reason") == "Hidden: the model predicts a severe label for this item."
    press(page, "v")
    assert not _blurred(page) and not page.is_visible("#blur-cover")
    press(page, "2", "1")  # phishing
    assert wait_for_item(page, not_id="sms-10231") == "sms-10232"
    assert not _blurred(page)
    assert page.text_content("#exposure-today") == "1"
    press(page, "1")
    # The representative of the Barclays campaign; its three members wait for it and are listed.
    assert wait_for_item(page, not_id="sms-10232") == "sms-20000"
    assert page.text_content("#cluster-size") == "4 similar items"
    assert len(page.query_selector_all("#cluster-members li")) == 3
    assert not _blurred(page)  # a ham suggestion and no severe answer
    assert page.errors == [] and page.evaluate("window.__csp") == []


def _user(username: str) -> Any:
    from tests.factories import UserFactory

    return UserFactory(username=username)


def test_known_severe_cluster_is_blurred_and_a_click_reveals_it(page: Any) -> None:
    project, _ = make_sms_project(slug="well-click", n_items=0, overlap=2, embedder="hashing")
    for n in range(4):
        ItemFactory(project=project, external_id=f"sms-3000{n}", text=PHISH.replace("barclays-uk-help.com",
                                                                                     f"barclays-help-{n}.com"))
    project_cluster_items(project_id=project.pk)
    lead = _user("lead")
    project.memberships.model.objects.create(project=project, user=lead, role="policy_lead")
    lease = queue_checkout_next(project=project, reviewer=lead)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=lead, labels=["spam/phishing"])  # the representative: severe
    log_in(page, "rev", next_url="/projects/well-click/label/")
    assert wait_for_item(page) == "sms-30000"
    assert _blurred(page)
    assert page.text_content("#blur-reason") == "Hidden: other reviewers gave this item a severe label."
    assert page.text_content("#cluster-size") == "4 similar items"
    page.screenshot(path=str(SCREENSHOTS / "labelling-cluster-blurred.png"), full_page=False)
    page.click("#blur-reveal")
    assert not _blurred(page)
    assert page.errors == [] and page.evaluate("window.__csp") == []


def test_after_the_daily_budget_the_queue_serves_other_work(page: Any) -> None:
    project, _ = make_sms_project(slug="well-budget", n_items=6)
    wellness_policy_update(actor=None, project=project, daily_severe_budget=1)
    _rank(project, {"sms-10231": "spam/phishing", "sms-10236": "spam/phishing", "sms-10232": "ham"})
    log_in(page, "rev", next_url="/projects/well-budget/label/")
    assert wait_for_item(page) == "sms-10231"
    press(page, "v", "2", "1")
    # The ranking's next item is predicted phishing: past her budget she is served the ham one instead.
    assert wait_for_item(page, not_id="sms-10231") == "sms-10232"
    assert page.text_content("#exposure-today") == "1 / 1"
    assert not _blurred(page)
    assert Item.objects.get(external_id="sms-10236", project=project).n_done == 0  # left for others
    assert page.errors == []


def test_break_reminder_after_a_long_stretch_and_dismiss(page: Any) -> None:
    project, reviewer = make_sms_project(slug="well-break", n_items=5)
    wellness_policy_update(actor=None, project=project, break_after_minutes=1)
    for _ in range(2):
        lease = queue_checkout_next(project=project, reviewer=reviewer)
        assert lease is not None
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ham"])
    now = timezone.now()
    for annotation, ago in zip(Annotation.objects.filter(reviewer=reviewer).order_by("id"), (150, 30), strict=True):
        Annotation.objects.filter(pk=annotation.pk).update(created_at=now - timedelta(seconds=ago))
    log_in(page, "rev", next_url="/projects/well-break/label/")
    shown = wait_for_item(page)
    wait_js(page, "() => !document.getElementById('break-reminder').hidden")
    assert page.text_content("#break-minutes") == "2"
    page.click("#break-dismiss")
    assert not page.is_visible("#break-reminder")
    press(page, "1")
    wait_for_item(page, not_id=shown)
    assert not page.is_visible("#break-reminder")  # dismissed for this stretch
    assert page.errors == []


def test_dashboard_shows_exposure_per_reviewer_per_day(page: Any) -> None:
    project, reviewer = make_sms_project(slug="well-dash", n_items=8)
    wellness_policy_update(actor=None, project=project, daily_severe_budget=2)
    second = _user("rev2")
    lead = _user("lead")
    project.memberships.model.objects.create(project=project, user=second, role="reviewer")
    project.memberships.model.objects.create(project=project, user=lead, role="policy_lead")
    for who, labels in ((reviewer, "spam/phishing"), (reviewer, "abuse/threat"), (reviewer, "ham"),
                        (second, "spam/promo"), (second, "spam/scam")):
        lease = queue_checkout_next(project=project, reviewer=who)
        assert lease is not None
        annotation_submit(lease_id=lease.pk, reviewer=who, labels=[labels])
    log_in(page, "lead", next_url="/projects/well-dash/dashboard/")
    wait_js(page, "() => document.body.dataset.dashboard === 'ready'", timeout=30)
    rows = page.eval_on_selector_all("#exposure-table tbody tr",
                                     "(rows) => rows.map((r) => [...r.cells].slice(1).map((c) => c.textContent))")
    assert rows == [["rev2", "2", "1", "\u2013"], ["rev", "3", "2", "reached"]]
    page.locator("#exposure-panel").screenshot(path=str(SCREENSHOTS / "dashboard-exposure.png"))
    assert page.errors == [] and page.evaluate("window.__csp") == []


def test_dashboard_shows_the_propagation_precision_per_label(page: Any) -> None:
    """The panel reads GET .../stats/: propagated answers, verified ones, agreements and the Wilson interval."""
    from labeling.models import ClusterKind, ClusterMember
    from labeling.services.propagation import propagation_policy_set, propagation_reevaluate
    from labeling.stats.proportions import wilson_interval

    project, reviewer = make_sms_project(slug="prop-dash", n_items=12)
    lead, second = _user("lead"), _user("rev2")
    project.memberships.model.objects.create(project=project, user=lead, role="policy_lead")
    project.memberships.model.objects.create(project=project, user=second, role="reviewer")
    items = list(Item.objects.filter(project=project).order_by("id"))
    representative, members = items[0], items[1:]
    Item.objects.filter(pk=representative.pk).update(random_key=0.0)
    ClusterMember.objects.bulk_create([
        ClusterMember(item=item, project=project, representative=representative,
                      kind=ClusterKind.REPRESENTATIVE if item == representative else ClusterKind.NEAR,
                      similarity=1.0 if item == representative else 0.9, exact_key="0" * 32, minhash=b"")
        for item in items])
    propagation_policy_set(actor=lead, project=project, label="spam/phishing", mode="propagate", threshold=0.85,
                           verification_share=0.5)
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None and lease.item_id == representative.pk
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam/phishing"])
    propagation_reevaluate(representative_id=representative.pk)  # what the worker does after the commit
    verified = Annotation.objects.filter(source="propagated", verification=True).count()
    assert 0 < verified < len(members)
    # rev2 verifies every picked member, disagreeing on the first.
    n = 0
    while (lease := queue_checkout_next(project=project, reviewer=second)) is not None:
        annotation_submit(lease_id=lease.pk, reviewer=second, labels=["ham"] if n == 0 else ["spam/phishing"])
        n += 1
    assert n == verified
    low, high = wilson_interval(verified - 1, verified)

    log_in(page, "lead", next_url="/projects/prop-dash/dashboard/")
    wait_js(page, "() => document.body.dataset.dashboard === 'ready'", timeout=30)
    rows = page.eval_on_selector_all("#propagation-table tbody tr",
                                     "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))")
    assert rows == [["spam/phishing", str(len(members)), str(verified), str(verified - 1),
                     f"{100 * (verified - 1) / verified:.1f}%", f"{100 * low:.1f}% \u2013 {100 * high:.1f}%"]]
    page.locator("#propagation-panel").screenshot(path=str(SCREENSHOTS / "dashboard-propagation.png"))
    assert page.errors == [] and page.evaluate("window.__csp") == []
