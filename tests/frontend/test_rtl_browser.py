"""Right-to-left and complex scripts in a real browser: Arabic, Hebrew, Hindi, Chinese and mixed-direction items.

The labelling page must lay each text out in its own direction (``dir="auto"``: checked as the computed
``direction`` and ``:dir()`` of the element in the DOM), draw its glyphs (the Noto faces are there and used),
keep numbers and links in logical order, and label every item from the keyboard. Then the dashboard's
per-language section. Writes docs/screenshots/label_arabic.png and docs/screenshots/dashboard_languages.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labeling.models import Annotation, Item, Project
from learning.models import ModelVersion
from tests.browser import log_in, wait_js
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

TAXONOMY: dict[str, Any] = {
    "name": "Scam policy",
    "multi_label": False,
    "labels": [
        {"key": "ok", "name": "Not a scam", "description": "رسالة عادية بين الناس. An ordinary message."},
        {"key": "scam", "name": "Scam", "description": "يطلب المال أو بيانات الحساب. Asks for money or account data."},
    ],
}

# external id -> (text, meta, expected direction, the script's Noto face, label key, the key that labels it)
ITEMS: dict[str, tuple[str, dict[str, str], str, str, str, str]] = {
    "ar-1": ("تهانينا! لقد ربحت جائزة بقيمة 5000 ريال. أرسل رقم بطاقتك إلى https://prize.example/ar قبل 12:00 اليوم",
             {"المرسل": "+966 50 123 4567", "channel": "sms"}, "rtl", "Noto Sans Arabic", "scam", "2"),
    "he-1": ("היי, נפגשים מחר ב-10:30 בקפה ליד התחנה?", {"sender": "052-1234567"}, "rtl", "Noto Sans Hebrew",
             "ok", "1"),
    "hi-1": ("आपका खाता बंद कर दिया जाएगा। तुरंत 9876543210 पर कॉल करें और OTP बताएं 🙏", {}, "ltr",
             "Noto Sans Devanagari", "scam", "2"),
    "zh-1": ("明天下午三点开会，请准时参加。会议室：B-204 😊", {"来源": "企业微信"}, "ltr", "Noto Sans CJK SC",
             "ok", "1"),
    # Mixed direction: an English sentence quoting Arabic, with a number and a link; its first strong letter is
    # Latin, so the paragraph is left to right and the Arabic run inside it right to left.
    "mix-1": ("Forwarded from the group: \"اربح 500 دولار الآن\" — see https://example.com/offer?id=42 before 5pm",
              {"lang_hint": "en+ar"}, "ltr", "Noto Sans Arabic", "scam", "2"),
    # Mixed the other way: Arabic first, then an English product name and a price.
    "mix-2": ("عرض خاص على iPhone 15 Pro بسعر 999$ فقط، اتصل على 0501234567", {}, "rtl", "Noto Sans Arabic",
              "scam", "2"),
}


def make_project() -> tuple[Project, Any]:
    project = ProjectFactory(slug="world", name="Scams, worldwide", taxonomy=TAXONOMY)
    reviewer = member(project, username="rev", role="reviewer")
    languages = {"ar-1": "ar", "he-1": "he", "hi-1": "hi", "zh-1": "zh", "mix-1": "en", "mix-2": "ar"}
    for external_id, (text, meta, *_rest) in ITEMS.items():
        ItemFactory(project=project, external_id=external_id, text=text, meta=meta, language=languages[external_id])
    return project, reviewer


def shown_id(page: Any, previous: str | None) -> str:
    wait_js(page, """(prev) => {
      const t = document.getElementById('item-external-id').textContent;
      return t !== '…' && t !== '—' && t !== prev && !document.getElementById('labeller').classList.contains('is-busy');
    }""", previous)
    text: str = page.text_content("#item-external-id")
    return text


DIRECTION = """() => {
  const text = document.getElementById('item-text');
  const meta = Array.from(document.querySelectorAll('#item-meta dd, #item-meta dt'));
  return {
    dir: text.getAttribute('dir'),
    computed: getComputedStyle(text).direction,
    rtl: text.matches(':dir(rtl)'),
    meta: meta.map((m) => [m.textContent, m.matches(':dir(rtl)') ? 'rtl' : 'ltr']),
  };
}"""


def test_scripts_render_in_their_direction_and_label_with_the_keyboard(page: Any) -> None:
    project, reviewer = make_project()
    log_in(page, "rev", next_url="/projects/world/label/")
    page.set_viewport_size({"width": 1280, "height": 860})
    seen: dict[str, dict[str, Any]] = {}
    previous: str | None = None
    shot = False
    while len(seen) < len(ITEMS):
        current = shown_id(page, previous)
        text, meta, direction, face, _label, key = ITEMS[current]
        layout = page.evaluate(DIRECTION)
        seen[current] = layout
        assert layout["dir"] == "auto"
        assert layout["computed"] == direction, (current, layout)
        assert layout["rtl"] is (direction == "rtl")
        # The text is shown exactly as stored: numbers, links and emoji in logical order, nothing dropped.
        assert page.text_content("#item-text") == text
        assert sorted(shown for shown, _ in layout["meta"]) == sorted([*meta, *meta.values()])
        # Each meta key and value takes its own direction: Arabic ones right to left, Latin ones left to right.
        for shown, shown_direction in layout["meta"]:
            first_strong = next((c for c in shown if c.isalpha()), "a")
            expected = "rtl" if "\u0590" <= first_strong <= "\u06ff" else "ltr"
            assert shown_direction == expected, (current, shown, shown_direction)
        # The script's glyphs come from a face that has them (Debian's Noto fonts): no empty boxes.
        assert page.evaluate("([face, sample]) => document.fonts.check('16px \"' + face + '\"', sample)",
                             [face, text]) is True
        if current == "ar-1" and not shot:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "label_arabic.png"))
            shot = True
        page.keyboard.press(key)
        previous = current
    wait_js(page, "() => !document.getElementById('done').hidden")
    assert shot
    assert page.errors == []
    assert page.evaluate("window.__csp") == []
    answers = {a.item.external_id: a.labels for a in Annotation.objects.filter(project=project).select_related("item")}
    assert answers == {external_id: [spec[4]] for external_id, spec in ITEMS.items()}
    assert all(a.reviewer_id == reviewer.pk for a in Annotation.objects.filter(project=project))


def test_dashboard_shows_each_language(page: Any) -> None:
    project, reviewer = make_project()
    second = member(project, username="rev2", role="reviewer")
    member(project, username="lead", role="policy_lead")
    version = project.current_taxonomy_version
    assert version is not None
    extra = {"ar": 40, "en": 25, "hi": 12, "zh": 8}
    samples = {"ar": "رسالة رقم {n} من العميل", "en": "customer message number {n}", "hi": "ग्राहक संदेश संख्या {n}",
               "zh": "客户消息编号 {n}"}
    for code, n in extra.items():
        for i in range(n):
            item = ItemFactory(project=project, external_id=f"{code}-x{i}", text=samples[code].format(n=i),
                               language=code, n_required=2)
            if i < n // 2:
                first = "scam" if i % 3 == 0 else "ok"
                second_answer = first if (i % 5 or code == "ar") else ("ok" if first == "scam" else "scam")
                for who, label in ((reviewer, first), (second, second_answer)):
                    Annotation.objects.create(project=project, item=item, reviewer=who, labels=[label],
                                              taxonomy_version=version, selection_reason="exploration",
                                              model_version=1,
                                              inclusion_probability=0.4)
                Item.objects.filter(pk=item.pk).update(n_done=2)
    ModelVersion.objects.create(project=project, version=4, status=ModelVersion.Status.ACTIVE, fingerprint="f",
                                n_annotations=70, metrics={"cv": {"by_language": {
                                    "ar": {"n": 20, "macro_f1": 0.91, "accuracy": 0.93, "average_precision": 0.95},
                                    "en": {"n": 24, "macro_f1": 0.88, "accuracy": 0.9, "average_precision": 0.92}}}})
    log_in(page, "lead", next_url="/projects/world/dashboard/")
    wait_js(page, "() => document.body.dataset.dashboard === 'ready'", timeout=30)
    assert page.errors == []
    assert page.evaluate("window.__csp") == []
    rows = page.eval_on_selector_all(
        "#languages-table tbody tr", "(rows) => rows.map((r) => [r.dataset.language, r.cells[1].textContent, "
        "r.cells[2].textContent, r.cells[5].textContent])")
    assert rows == [["ar", "42", "20", "0.95"], ["en", "26", "12", "0.92"], ["hi", "13", "6", "–"],
                    ["zh", "9", "4", "–"], ["he", "1", "0", "–"]]
    # Mostly not English on an English embedder: the page says so and says how to switch.
    assert page.is_visible("#languages-advice")
    assert "multilingual" in page.text_content("#languages-advice")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator("#languages-panel").screenshot(path=str(SCREENSHOTS / "dashboard_languages.png"))
