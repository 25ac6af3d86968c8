"""The quality dashboard and the adjudication page: access, the decide form, and a real browser screenshot.

The browser test builds the demo project (``load_demo``: the SMS Spam Collection sample, its users and gold
items) and gives it a labelling history through the real pipeline: items are embedded (hashing embedder, so
no model download) and retrained by the learning services, reviewers take items from the real queue and
submit through the real service, gold answers are scored by it, disagreements go to adjudication and the lead
decides some. Reviewers answer from the sample's true labels with their own error rates; one of them is
careless on gold. Then Chromium opens the dashboard as the lead and the test saves
docs/screenshots/dashboard.png.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from labeling.models import Adjudication, Annotation, AuditEvent, Item, Lease, Project, SelectionReason
from labeling.services import annotations as annotations_service
from labeling.services.adjudication import adjudication_decide, adjudication_sync_for_item
from labeling.services.annotations import annotation_submit, lease_skip
from labeling.services.queues import queue_checkout_next
from tests.browser import PASSWORD, log_in, wait_js
from tests.factories import ItemFactory, ProjectFactory, member

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DEMO_DIR = Path(__file__).resolve().parents[2] / "labeling" / "fixtures" / "demo"

TAXONOMY: dict[str, Any] = {
    "name": "SMS", "multi_label": False,
    "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam", "severity": 2}],
}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Submits ask for a retrain on commit; these tests run the learning services themselves, so nothing
    # is sent to a broker.
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


# --------------------------------------------------------------------------- pages, without a browser


@pytest.mark.django_db
def test_dashboard_access() -> None:
    project = ProjectFactory(slug="dash", taxonomy=TAXONOMY)
    users = {role: member(project, username=role, role=role)
             for role in ("reviewer", "policy_lead", "ml_engineer", "admin")}
    users["outsider"] = member(ProjectFactory(slug="elsewhere"), username="outsider", role="admin")
    client = Client()
    assert client.get("/projects/dash/dashboard/").status_code == 302  # to the login page
    expected = {"reviewer": 403, "outsider": 404, "policy_lead": 200, "ml_engineer": 200, "admin": 200}
    for username, status in expected.items():
        client.force_login(users[username])
        response = client.get("/projects/dash/dashboard/")
        assert response.status_code == status, username
        if status == 200:
            config = response.context["config"]
            assert config["urls"]["summary"] == "/api/projects/dash/stats/"
            assert config["urls"]["models"] == "/api/projects/dash/models/"
            assert (config["urls"]["adjudication"] is not None) == (username != "ml_engineer")
            assert b'<script src="/static/frontend/dashboard.js">' in response.content
            assert b"<script>" not in response.content  # nothing inline: the CSP would refuse it
        client.logout()


@pytest.fixture
def disputed(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="dash", taxonomy=TAXONOMY, overlap=2)
    ann, bob = member(project, username="ann", role="reviewer"), member(project, username="bob", role="reviewer")
    lead = member(project, username="lead", role="policy_lead")
    item = ItemFactory(project=project, external_id="sms-9", text="<script>alert(1)</script> WIN now", n_required=2)
    for reviewer, labels, comment in ((ann, ["ham"], "<b>fine</b>"), (bob, ["spam"], "prize bait")):
        Annotation.objects.create(project=project, item=item, reviewer=reviewer, labels=labels, comment=comment,
                                  taxonomy_version=project.current_taxonomy_version, selection_reason="exploration")
    Item.objects.filter(pk=item.pk).update(n_done=2)
    adjudication = adjudication_sync_for_item(item_id=item.pk)
    assert adjudication is not None
    return {"project": project, "lead": lead, "ann": ann, "adjudication": adjudication}


def test_adjudication_page_shows_answers_as_text_and_decides(disputed: dict[str, Any]) -> None:
    client = Client()
    client.force_login(disputed["lead"])
    page = client.get("/projects/dash/adjudication/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; WIN now" in html and "<script>alert" not in html
    assert "&lt;b&gt;fine&lt;/b&gt;" in html and "prize bait" in html
    adjudication = disputed["adjudication"]
    bad = client.post("/projects/dash/adjudication/", {"adjudication": adjudication.pk, "labels": ["eggs"]},
                      follow=True)
    assert "unknown label &#x27;eggs&#x27;" in bad.content.decode()
    adjudication.refresh_from_db()
    assert adjudication.state == "pending"
    done = client.post("/projects/dash/adjudication/", {"adjudication": adjudication.pk, "labels": ["spam"],
                                                        "note": "prize scam"}, follow=True)
    assert done.redirect_chain == [("/projects/dash/adjudication/", 302)]
    assert "Decided sms-9: spam." in done.content.decode()
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.labels, adjudication.note, adjudication.decided_by_id) == (
        "decided", ["spam"], "prize scam", disputed["lead"].pk)


def test_reviewers_cannot_adjudicate_through_the_page(disputed: dict[str, Any]) -> None:
    client = Client()
    client.force_login(disputed["ann"])
    adjudication = disputed["adjudication"]
    assert client.get("/projects/dash/adjudication/").status_code == 403
    assert client.post("/projects/dash/adjudication/", {"adjudication": adjudication.pk,
                                                        "labels": ["ham"]}).status_code == 403
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.labels) == ("pending", None)
    assert not AuditEvent.objects.filter(action="adjudication.decide").exists()


# --------------------------------------------------------------------------- the demo project's history


@dataclass
class Reviewer:
    user: Any
    accuracy: float
    gold_accuracy: float
    follows_suggestions: float
    seconds: float

    def answer(self, truth: str, suggestion: dict[str, Any] | None, rng: random.Random) -> list[str]:
        if suggestion and rng.random() < self.follows_suggestions:
            return [suggestion["label"]]  # automation bias: takes the model's word for it
        if rng.random() < self.accuracy:
            return [truth]
        return ["spam" if truth == "ham" else "ham"]

    gold_answered: int = 0

    def answer_gold(self, truth: str) -> list[str]:
        """Gold checks, wherever they come from, are right at exactly the gold_accuracy rate (the nth is right
        when floor(n * accuracy) steps up), so who is flagged is fixed by the cast. Random draws, or grading the
        queue's own gold mixing at ordinary accuracy, put reviewer4 next to the threshold and made it flaky."""
        self.gold_answered += 1
        n, accuracy = self.gold_answered, self.gold_accuracy
        right = int(n * accuracy) > int((n - 1) * accuracy)
        return [truth if right else ("spam" if truth == "ham" else "ham")]


def demo_truth() -> dict[str, str]:
    """The oracle: every demo item's label, gold items included (the queue mixes them in at the gold rate)."""
    truth: dict[str, str] = {}
    for name in ("sms_items.jsonl.gz", "sms_gold.jsonl.gz"):
        with gzip.open(DEMO_DIR / name, "rt", encoding="utf-8") as handle:
            truth.update({row["external_id"]: row["label"] for row in map(json.loads, handle)})
    return truth


COMMENTS = ["link looks off", "premium-rate number", "sounds like a friend",
            "unsure: could be a promo they signed up for", "asks to call back to claim", ""]


def build_history(project: Project, reviewers: list[Reviewer], lead: Any, *, rounds: int = 6, per_round: int = 130,
                  seed: int = 11) -> None:
    """Labelling history through the real services (see the module docstring)."""
    from learning.services.embedding import project_embed_items
    from learning.services.retrain import model_version_train

    rng = random.Random(seed)
    truth = demo_truth()
    wired = "adjudication_sync_for_item" in annotations_service.annotation_submit.__code__.co_names
    project_embed_items(project_id=project.pk)
    for _round in range(rounds):
        model_version_train(project_id=project.pk)
        project.refresh_from_db()
        for step in range(per_round):
            reviewer = reviewers[step % len(reviewers)]
            lease = queue_checkout_next(project=project, reviewer=reviewer.user, rng=rng)
            if lease is None:
                continue
            if rng.random() < 0.04:
                lease_skip(lease_id=lease.pk, reviewer=reviewer.user)
                continue
            if lease.item.is_gold:  # the queue mixed in a gold check: answered at the reviewer's gold accuracy
                labels = reviewer.answer_gold(truth[lease.item.external_id])
            else:
                labels = reviewer.answer(truth[lease.item.external_id], lease.suggestion, rng)
            lead_ms = int(1000 * rng.lognormvariate(0, 0.45) * reviewer.seconds)
            comment = rng.choice(COMMENTS) if rng.random() < 0.15 else ""
            annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer.user, labels=labels,
                                              lead_time_ms=lead_ms, comment=comment)
            if not wired:  # the call annotation_submit makes once it is wired
                adjudication_sync_for_item(item_id=annotation.item_id)
    model_version_train(project_id=project.pk)
    project.refresh_from_db()

    # Gold: each reviewer meets ten gold checks. The queue already mixed some in (the demo's gold_rate); top
    # up with unseen ones, recorded as the queue's gold mixing records them.
    gold_items = list(Item.objects.filter(project=project, is_gold=True).order_by("id"))
    for reviewer in reviewers:
        seen = set(Lease.objects.filter(project=project, reviewer=reviewer.user, item__is_gold=True)
                   .values_list("item_id", flat=True))
        unseen = [item for item in gold_items if item.pk not in seen]
        for item in rng.sample(unseen, max(0, min(len(unseen), 10 - len(seen)))):
            lease = Lease.objects.create(project=project, item=item, reviewer=reviewer.user,
                                         expires_at=timezone.now() + timedelta(minutes=10),
                                         selection_reason=SelectionReason.GOLD,
                                         taxonomy_version=project.current_taxonomy_version)
            expected = item.gold_labels[0] if isinstance(item.gold_labels, list) else item.gold_labels
            annotation_submit(lease_id=lease.pk, reviewer=reviewer.user, labels=reviewer.answer_gold(expected),
                              lead_time_ms=int(1000 * rng.lognormvariate(0, 0.4) * reviewer.seconds))

    # The lead works through most of the queue, siding with the true label.
    for adjudication in Adjudication.objects.filter(project=project).select_related("item").order_by("id"):
        if rng.random() < 0.7:
            adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk,
                                labels=[truth.get(adjudication.item.external_id, "ham")])

    # Spread the history over the last two weeks, in the order it happened, so the timeline has days.
    start = timezone.now() - timedelta(days=13, hours=20)
    annotations = list(Annotation.objects.filter(project=project).order_by("id"))
    span = timedelta(days=13, hours=18)
    for i, annotation in enumerate(annotations):
        jitter = timedelta(minutes=rng.randint(0, 40))
        annotation.created_at = start + span * (i / max(1, len(annotations) - 1)) + jitter
    Annotation.objects.bulk_update(annotations, ["created_at"], batch_size=500)
    leases = list(Lease.objects.filter(project=project, annotation__isnull=False).select_related("annotation"))
    for lease in leases:
        lease.created_at = lease.annotation.created_at - timedelta(milliseconds=lease.annotation.lead_time_ms or 0)
    Lease.objects.bulk_update(leases, ["created_at"], batch_size=500)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_screenshot_of_the_dashboard(page: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("SIFT_DEMO_PASSWORD", PASSWORD)
    # Embed the whole demo pool in this process: above one chunk, a run only fans out chunk tasks to workers.
    settings.SIFT_EMBED_CHUNK = 1_000_000
    call_command("load_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115 - the command writes a summary
    project = Project.objects.get(slug="sms-demo")
    Project.objects.filter(pk=project.pk).update(embedder="hashing", suggestion_holdout_rate=0.25,
                                                 gold_accuracy_threshold=0.8)
    project.refresh_from_db()
    users = {u.username: u for u in (member(project, username=n, role="reviewer") for n in ("reviewer3", "reviewer4"))}
    from django.contrib.auth import get_user_model

    users |= {u.username: u for u in get_user_model().objects.filter(username__in=["reviewer1", "reviewer2", "lead"])}
    reviewers = [
        Reviewer(users["reviewer1"], accuracy=0.96, gold_accuracy=0.95, follows_suggestions=0.05, seconds=7.5),
        Reviewer(users["reviewer2"], accuracy=0.93, gold_accuracy=0.9, follows_suggestions=0.25, seconds=5.0),
        Reviewer(users["reviewer3"], accuracy=0.9, gold_accuracy=0.9, follows_suggestions=0.1, seconds=9.0),
        Reviewer(users["reviewer4"], accuracy=0.78, gold_accuracy=0.35, follows_suggestions=0.45, seconds=3.2),
    ]
    build_history(project, reviewers, users["lead"])
    # A few leases out right now, for the queue panel.
    for name in ("reviewer1", "reviewer3"):
        queue_checkout_next(project=project, reviewer=users[name])

    log_in(page, "lead", next_url="/projects/sms-demo/dashboard/")
    wait_js(page, "() => document.body.dataset.dashboard === 'ready'", timeout=30)
    assert page.evaluate("() => window.__csp") == []
    assert page.errors == []
    assert page.is_hidden("#dash-error")
    charts = page.evaluate("""() => ['chart-prevalence', 'chart-curve', 'chart-agreement', 'chart-distribution',
        'chart-final', 'chart-queue', 'chart-label-alpha'].filter((id) => Chart.getChart(id))""")
    assert charts == ["chart-prevalence", "chart-curve", "chart-agreement", "chart-distribution", "chart-final",
                      "chart-queue", "chart-label-alpha"]
    rows = page.eval_on_selector_all("#reviewers-table tbody tr",
                                     "(rows) => rows.map((r) => [r.cells[0].textContent, r.className])")
    assert rows == [["reviewer1", ""], ["reviewer2", ""], ["reviewer3", ""], ["reviewer4", "is-flagged"]]
    assert "reviewer4 answered" in page.text_content("#alerts")
    assert page.text_content("#kpi-alpha") not in ("\u2013", "")  # the page's en-dash placeholder
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
