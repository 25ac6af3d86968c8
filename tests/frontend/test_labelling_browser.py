"""The labelling page in a real browser (Chromium through Playwright), against the real queue API.

Each test drives the page with the keyboard only and then asserts the exact database rows the
page promised to write.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Annotation, AuditEvent, Item, Lease, Project, RankingEntry, RankingRow
from tests.browser import log_in, wait_js
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

SMS_POLICY: dict[str, Any] = {
    "name": "SMS policy",
    "multi_label": False,
    "labels": [
        {"key": "ham", "name": "Not spam",
         "description": "An ordinary message between people, or a service message the recipient **asked for** "
                        "(delivery notices, one-time codes they requested).",
         "positive_examples": ["Running 10 min late, save me a seat", "Your code is 481 220. Do not share it."]},
        {"key": "spam", "name": "Spam", "severity": 2,
         "description": "Unsolicited bulk or commercial messages. Open it to pick the kind.",
         "children": [
             {"key": "spam/phishing", "name": "Phishing", "severity": 4, "action": "remove",
              "description": "Tries to get **credentials, card numbers or codes**, usually through a link that "
                             "imitates a bank, courier or government service.\n\n"
                             "- Urgency (\"your account will be closed\")\n"
                             "- A look-alike domain or a URL shortener\n\n"
                             "When unsure between *phishing* and *scam*, prefer phishing if there is a link.",
              "positive_examples": ["HSBC: a new payee was added. If this wasn't you verify at hsbc-secure.co"],
              "negative_examples": ["Your parcel is out for delivery today (no link, expected)"]},
             {"key": "spam/scam", "name": "Scam / fraud", "severity": 3, "action": "remove",
              "description": "Prize, lottery, investment or romance fraud without a credential grab."},
             {"key": "spam/promo", "name": "Promotion", "severity": 1, "action": "allow",
              "description": "Marketing from a real business. Spam only when unsolicited or without opt-out."},
         ]},
        {"key": "abuse", "name": "Abuse", "severity": 3,
         "description": "Threats, harassment or hate aimed at the recipient.",
         "children": [
             {"key": "abuse/threat", "name": "Threat", "severity": 5, "action": "escalate",
              "description": "A credible threat of violence. **Escalate** as well as labelling."},
             {"key": "abuse/harassment", "name": "Harassment", "severity": 3,
              "description": "Repeated unwanted contact, insults or intimidation."},
         ]},
    ],
}

SMS_TEXTS = [
    ("sms-10231", "Royal Mail: your parcel is held due to unpaid postage (£1.45). Pay now to release it: "
                  "royalmail-redeliver.info/pay", {"sender": "+44 7700 900123", "received": "2024-03-02 09:14",
                                                   "carrier": "EE", "reports": "3"}),
    ("sms-10232", "Hey, are we still on for dinner at 7? I booked the Thai place on Mill Road", {}),
    ("sms-10233", "CONGRATULATIONS! You've won a £500 Tesco voucher. Reply YES to claim before midnight", {}),
    ("sms-10234", "Your Amazon verification code is 539-118. Don't share this code with anyone.", {}),
    ("sms-10235", "20% off all pizzas this weekend with code WEEKEND20. Txt STOP to opt out", {}),
    ("sms-10236", "URGENT: your Barclays account is locked. Verify your details at barclays-uk-help.com", {}),
    ("sms-10237", "Mum, I dropped my phone in the toilet, this is my new number. Can you send me £200?", {}),
    ("sms-10238", "You think you can ignore me? I know where you live.", {}),
    ("sms-10239", "Reminder: dentist appointment Tue 14 May 10:30. Reply C to cancel.", {}),
    ("sms-10240", "Invest £250 in Bitcoin today and earn £5,000 a week, guaranteed! Call Mark 07700 900456", {}),
    ("sms-10241", "Can you pick up milk on the way home?", {}),
    ("sms-10242", "HMRC: you are due a tax refund of £265.10. Claim here: hmrc-refund-gov.uk", {}),
]


def make_sms_project(*, slug: str = "sms", taxonomy: dict[str, Any] = SMS_POLICY, n_items: int = 12,
                     **settings: Any) -> tuple[Project, Any]:
    project = ProjectFactory(slug=slug, name="SMS spam & abuse", taxonomy=taxonomy, **settings)
    reviewer = member(project, username="rev", role="reviewer")
    for external_id, text, meta in SMS_TEXTS[:n_items]:
        ItemFactory(project=project, external_id=external_id, text=text, meta=meta or {"sender": "+44 7700 900000"})
    return project, reviewer


def current_id(page: Any) -> str:
    text: str = page.text_content("#item-external-id")
    return text


def wait_for_item(page: Any, *, not_id: str | None = None) -> str:
    """Wait until an item other than ``not_id`` is on screen and the page is idle; return its external id."""
    wait_js(
        page,
        """(prev) => {
          const t = document.getElementById('item-external-id').textContent;
          const root = document.getElementById('labeller');
          return t !== '…' && t !== prev && !root.classList.contains('is-busy');
        }""",
        not_id,
    )
    return current_id(page)


def press(page: Any, *keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)


# Which keys label which item: a top-level leaf, a child (parent digit, then child digit) and an
# Esc that backs out of a wrongly opened parent. The label follows from the item, not the order
# the queue serves them in (which is random without a ranking).
PLAN: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "sms-10231": (("2", "1"), ["spam/phishing"]),
    "sms-10232": (("1",), ["ham"]),
    "sms-10233": (("2", "2"), ["spam/scam"]),
    "sms-10234": (("3", "Escape", "1"), ["ham"]),
    "sms-10235": (("2", "3"), ["spam/promo"]),
    "sms-10236": (("2", "1"), ["spam/phishing"]),
    "sms-10237": (("2", "2"), ["spam/scam"]),
    "sms-10238": (("3", "1"), ["abuse/threat"]),
    "sms-10239": (("1",), ["ham"]),
    "sms-10240": (("2", "2"), ["spam/scam"]),
    "sms-10241": (("1",), ["ham"]),
    "sms-10242": (("2", "1"), ["spam/phishing"]),
}


def test_reviewer_labels_ten_items_with_the_keyboard(page: Any) -> None:
    project, reviewer = make_sms_project()
    log_in(page, "rev", next_url="/projects/sms/label/")
    shown = wait_for_item(page)

    expected: dict[str, list[str]] = {}
    comments: dict[str, str] = {}
    latencies: list[float] = []
    skipped: str | None = None
    undone: str | None = None
    undone_lease_id: int | None = None

    def label_current(keys: tuple[str, ...]) -> str:
        before = page.evaluate("window.__shown.length")
        press(page, *keys)
        nxt = wait_for_item(page, not_id=shown)
        key_at = page.evaluate("window.__keys[window.__keys.length - 1][1]")
        first = page.evaluate("(n) => window.__shown.slice(n).find(([t]) => t !== '…')", before)
        latencies.append(first[1] - key_at)
        return nxt

    while len(expected) < 10:
        if len(expected) == 3 and skipped is None:
            skipped = shown
            press(page, "s")
            shown = wait_for_item(page, not_id=shown)
            continue
        if len(expected) == 4 and not comments:
            # C opens the comment box; digits typed there are text, not labels; Esc hands keys back.
            comments[shown] = "Sender 0800 123 4 is a known spoofed number"
            press(page, "c")
            page.keyboard.type(comments[shown])
            press(page, "Escape")
            assert page.evaluate("document.activeElement.id") != "comment"
        assert shown is not None
        keys, labels = PLAN[shown]
        labelled = shown
        expected[labelled] = labels
        shown = label_current(keys)
        if len(expected) == 6 and undone is None:
            # U takes the last submit back: the same item returns and is labelled again, differently.
            undone = labelled
            undone_lease_id = Lease.objects.get(item__external_id=labelled, state="submitted").pk
            press(page, "u")
            shown = wait_for_item(page, not_id=shown)
            assert shown == undone
            assert "Undone" in page.text_content("#status")
            expected[undone] = ["spam/promo"] if labels != ["spam/promo"] else ["ham"]
            shown = label_current(("2", "3") if expected[undone] == ["spam/promo"] else ("1",))

    assert page.errors == []
    assert page.evaluate("window.__csp") == []

    # The exact rows the page promised.
    annotations = Annotation.objects.filter(project=project).select_related("item", "lease")
    assert {a.item.external_id: a.labels for a in annotations} == expected
    assert all(a.reviewer_id == reviewer.pk for a in annotations)
    assert all(a.lead_time_ms is not None and a.lead_time_ms > 0 for a in annotations)
    assert all(a.lease is not None and a.lease.state == "submitted" for a in annotations)
    assert all(a.idempotency_key and len(a.idempotency_key) == 36 for a in annotations)
    assert len({a.idempotency_key for a in annotations}) == 10
    assert {a.item.external_id: a.comment for a in annotations if a.comment} == comments
    # The undone item: its first annotation was deleted and the SAME lease submitted again.
    assert undone is not None
    relabelled = annotations.get(item__external_id=undone)
    assert relabelled.lease_id == undone_lease_id
    undo_events = AuditEvent.objects.filter(action="annotation.undo")
    assert [(e.data["item_id"], e.data["labels"]) for e in undo_events] == [
        (relabelled.item_id, PLAN[undone][1])]
    # Leases: 10 submitted, the skip, the lease released by the undo, and the item on screen now.
    states = sorted(Lease.objects.filter(project=project).values_list("state", flat=True))
    assert states == ["active"] + ["released"] + ["skipped"] + ["submitted"] * 10
    assert Lease.objects.get(state="skipped").item.external_id == skipped
    assert Lease.objects.get(state="active").item.external_id == shown
    assert skipped not in expected and shown not in expected
    assert sorted(Item.objects.filter(project=project, n_done=1).values_list("external_id", flat=True)) == sorted(
        expected)
    assert Item.objects.filter(project=project, n_done=0).count() == 2
    # The progress strip and the streak followed along without a reload.
    wait_js(page, "() => document.getElementById('progress-finished').textContent === '10'")
    assert page.text_content("#progress-mine-today") == "10"
    assert page.text_content("#streak") == "10"

    median = statistics.median(latencies)
    timings = page.evaluate("""() => performance.getEntriesByType('resource')
        .filter(e => e.initiatorType === 'fetch').map(e => [new URL(e.name).pathname, e.duration])""")
    submit_ms = [ms for path, ms in timings if path.endswith("/submit")]
    next_ms = [ms for path, ms in timings if path.endswith("/queue/next")]
    print(f"\nkeypress -> next item shown: median {median:.0f} ms, max {max(latencies):.0f} ms "
          f"over {len(latencies)} submits (median round trips: submit {statistics.median(submit_ms):.0f} ms, "
          f"queue/next {statistics.median(next_ms):.0f} ms)")
    assert max(latencies) < 3000


def test_help_overlay_lists_keys(page: Any) -> None:
    make_sms_project(n_items=2)
    log_in(page, "rev", next_url="/projects/sms/label/")
    wait_for_item(page)
    press(page, "?")
    assert page.is_visible("#help")
    help_text = page.text_content("#help")
    for phrase in ("Skip this item", "Undo your last submit", "Write a comment", "Back up one level"):
        assert phrase in help_text
    # Keys do nothing while the help is open; Esc closes it.
    press(page, "1")
    press(page, "Escape")
    assert not page.is_visible("#help")
    assert Annotation.objects.count() == 0


def test_xss_payloads_in_item_text_and_meta_stay_text(page: Any) -> None:
    project = ProjectFactory(slug="xss", taxonomy=SMS_POLICY)
    member(project, username="rev", role="reviewer")
    script = "<script>window.__xss=1</script>"
    image = '<img src=x onerror="window.__xss=1">'
    ItemFactory(project=project, external_id=f"id {image}", text=f"Win now {script} and {image}",
                meta={script: image, image: script, "nested": {"html": image}})
    log_in(page, "rev", next_url="/projects/xss/label/")
    wait_for_item(page)

    assert page.inner_text("#item-text") == f"Win now {script} and {image}"
    assert page.text_content("#item-external-id") == f"id {image}"
    pairs = page.eval_on_selector_all(
        "#item-meta div", "els => els.map(e => [e.querySelector('dt').textContent, e.querySelector('dd').textContent])")
    # (PostgreSQL's jsonb does not keep key order, so compare as a mapping.)
    nested = '{"html":"<img src=x onerror=\\"window.__xss=1\\">"}'
    assert dict(pairs) == {script: image, image: script, "nested": nested}
    assert len(pairs) == 3
    # Nothing was parsed as markup: no element was created, nothing ran, and no CSP rule had to step in.
    # The page's own image slot (image.js) is the only <img>: empty and hidden for a text item.
    # A text item's card holds no picture at all: image.js makes #item-image only for an item that brings an image.
    assert page.locator("#item-card img, #item-card script").count() == 0
    assert page.is_hidden("#item-figure")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("window.__csp") == []
    # Labelling it echoes the label's name into the status line, again as text.
    press(page, "1")
    wait_js(page, "() => document.getElementById('done') && !document.getElementById('done').hidden")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert Annotation.objects.get().labels == ["ham"]
    assert page.errors == []


def test_multi_label_digits_toggle_and_enter_submits(page: Any) -> None:
    taxonomy = {
        "name": "SMS flags", "multi_label": True,
        "labels": [
            {"key": "link", "name": "Contains a link"},
            {"key": "money", "name": "Asks for money"},
            {"key": "urgent", "name": "Urgency", "children": [
                {"key": "urgent/deadline", "name": "Deadline"}, {"key": "urgent/threat", "name": "Threat"}]},
        ],
    }
    project, _ = make_sms_project(slug="flags", taxonomy=taxonomy, n_items=2)
    log_in(page, "rev", next_url="/projects/flags/label/")
    first = wait_for_item(page)
    press(page, "1", "2", "1")  # toggle link on, money on, link off
    assert page.text_content("#selected-list") == "Asks for money"
    press(page, "3", "1", "Escape", "1", "Enter")  # open Urgency, deadline on, back up, link on, submit
    second = wait_for_item(page, not_id=first)
    assert second != first
    annotation = Annotation.objects.get(item__external_id=first)
    assert sorted(annotation.labels) == ["link", "money", "urgent/deadline"]
    assert page.get_attribute("button[data-label-key='money']", "aria-pressed") == "false"
    assert Annotation.objects.filter(project=project).count() == 1
    assert page.errors == []


def test_expired_lease_shows_message_and_fetches_next(page: Any) -> None:
    make_sms_project(n_items=3)
    log_in(page, "rev", next_url="/projects/sms/label/")
    first = wait_for_item(page)
    lease = Lease.objects.get(state="active")
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    press(page, "1")
    wait_js(page, "() => document.getElementById('status').textContent.includes('expired')")
    assert "take the next item" in page.text_content("#status")
    wait_js(page, "() => !document.getElementById('labeller').classList.contains('is-busy')")
    assert Annotation.objects.count() == 0
    fresh = Lease.objects.get(state="active", expires_at__gt=timezone.now())
    assert fresh.pk != lease.pk
    assert current_id(page) == fresh.item.external_id
    assert first  # the expired item may come back later; what matters is a live lease is on screen
    assert page.errors == []


def test_lease_renews_itself_while_the_page_is_visible(page: Any) -> None:
    make_sms_project(n_items=2, lease_seconds=3)
    log_in(page, "rev", next_url="/projects/sms/label/")
    shown = wait_for_item(page)
    lease = Lease.objects.get(state="active")
    # Renewed at ~80% of each 3 s period, so twice within ~5 s; the slack is for a loaded CI box.
    deadline = time.monotonic() + 20
    while Lease.objects.get(pk=lease.pk).renewals < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    lease.refresh_from_db()
    assert lease.renewals >= 2
    assert lease.state == "active" and lease.expires_at > timezone.now()
    assert current_id(page) == shown
    press(page, "1")
    wait_for_item(page, not_id=shown)
    assert Annotation.objects.get().lease_id == lease.pk
    assert page.errors == []


def test_the_banner_follows_embedding_until_the_first_model_is_ready(page: Any) -> None:
    from learning.models import LearningJob, ModelVersion
    from tests.learning.support import embed_items

    project, _ = make_sms_project(n_items=4, embedder="hashing")
    embed_items(list(project.items.order_by("id"))[:1])
    log_in(page, "rev", next_url="/projects/sms/label/")
    wait_for_item(page)  # random order meanwhile: the queue does not wait for the model
    assert page.is_visible("#learning-status")
    assert page.text_content("#learning-status-text") == (
        "Embedding 1 of 4 items (hashing). Until the first model is trained, the queue serves items in random order.")
    assert page.get_attribute("#learning-progress", "value") == "1"
    page.wait_for_timeout(300)  # let the busy fade settle
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labelling-embedding.png"), full_page=False)

    embed_items(list(project.items.order_by("id"))[1:])
    LearningJob.objects.create(project=project, kind=LearningJob.Kind.EMBED, generation=1)  # the pass's commit
    wait_js(page, "() => document.getElementById('learning-status').dataset.state === 'training'")
    assert page.text_content("#learning-status-text") == "All 4 items are embedded; training the first model."
    assert not page.is_visible("#learning-progress")

    ModelVersion.objects.create(project=project, version=1, status="active", fingerprint="fp",
                                embedder="hashing-v1-384", strategy="margin_exploit")
    wait_js(page, "() => document.getElementById('learning-status').hidden")
    assert "Model v1 is ready" in page.text_content("#status")
    assert page.errors == []


def test_lost_submit_response_is_retried_with_the_same_key(page: Any) -> None:
    make_sms_project(n_items=3)
    bodies: list[Any] = []

    def lose_first_response(route: Any) -> None:
        bodies.append(json.loads(route.request.post_data or "null"))
        if len(bodies) == 1:
            route.fetch()  # the server commits the annotation ...
            route.abort("connectionreset")  # ... but the browser never hears back
        else:
            route.continue_()

    # Routed before the page loads: a route added later can miss the page's first requests.
    page.context.route("**/api/leases/*/submit", lose_first_response)
    log_in(page, "rev", next_url="/projects/sms/label/")
    first = wait_for_item(page)
    press(page, "1")
    wait_for_item(page, not_id=first)
    assert page.errors == []
    assert len(bodies) == 2, (bodies, page.text_content("#status"))
    assert bodies[0]["idempotency_key"] == bodies[1]["idempotency_key"]
    annotation = Annotation.objects.get()
    assert annotation.item.external_id == first
    assert annotation.idempotency_key == bodies[0]["idempotency_key"]
    assert Lease.objects.filter(state="submitted").count() == 1


def test_screenshot_of_the_labelling_page(page: Any) -> None:
    from learning.models import ModelVersion
    from tests.learning.support import embed_items

    project, _reviewer = make_sms_project(embedder="hashing")
    # A realistic moment: every item is embedded and model v3's ranking is active (so the item shows why it
    # was picked and the model's suggestion, and no embedding banner), and part of the project is done.
    embed_items(list(Item.objects.filter(project=project)))
    ModelVersion.objects.create(project=project, version=3, status="active", fingerprint="fp",
                                embedder="hashing-v1-384", strategy="margin_exploit")
    items = {item.external_id: item for item in Item.objects.filter(project=project)}
    first = ["sms-10232", "sms-10239", "sms-10233", "sms-10231"]
    order = first + sorted(set(items) - set(first))
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=3, start_rank=0, rows=[
        RankingRow(item_id=items[key].pk, score=round(0.93 - n * 0.035, 3), reason="uncertainty",
                   suggested_label="spam/phishing" if key == "sms-10231" else "ham", suggested_confidence=0.62)
        for n, key in enumerate(order)
    ])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=3)
    Item.objects.filter(external_id__in=order[-5:]).update(n_done=1)
    log_in(page, "rev", next_url="/projects/sms/label/")
    shown = wait_for_item(page)
    for key in first[:3]:  # a few labels first, so the streak and today's count are under way
        assert shown == key
        press(page, *PLAN[key][0])
        shown = wait_for_item(page, not_id=shown)
    assert shown == "sms-10231"
    wait_js(page, "() => document.getElementById('progress-finished').textContent === '8'")
    press(page, "2")  # open Spam: its children get 1-3
    page.hover("button[data-label-key='spam/phishing']")
    page.wait_for_timeout(300)  # let the busy fade settle
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labelling.png"), full_page=False)
    assert page.text_content("#suggestion-label") == "Phishing"
    assert not page.is_visible("#learning-status")
    assert page.is_visible("article.guideline:has-text('credentials, card numbers or codes')")
    assert page.errors == []
