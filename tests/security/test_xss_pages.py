"""XSS in a real browser: payloads in every user-editable field, then Chromium opens every page as an admin.

The world of tests/security/support.py is seeded with a payload in each field a user can write: project name and
description, item text, external id, meta keys and values, label names, guidelines and examples, the taxonomy
name and changelog, a draft in the editor, submit comments, adjudication notes and usernames (a 1 MB item is the
one the admin is served). Export snapshot names are slugs (validated), so no payload fits there.

On every page the test asserts, in three independent ways, that no payload became markup:
1. nothing ran: ``window.__xss`` (every payload tries to set it) is undefined and no dialog opened;
2. nothing was parsed: the DOM holds no event-handler attribute, no ``javascript:`` URL, no inline script and
   none of the payloads' elements (svg, iframe, img, details, math...), and no CSP violation was reported
   (the policy would have blocked an injected script, and said so);
3. the policy is enforced: the page carries the Content-Security-Policy header, and an inline script the test
   injects itself through DevTools is refused (it does not run, and a violation is reported).
It also checks that payloads are shown as text (their characters are on the page), and that the browser
fetched nothing from any origin but the server's (image URLs in meta are never loaded).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from labeling.models import Item, Lease
from labeling.services.taxonomy import taxonomy_draft_save
from tests.browser import log_in, wait_js
from tests.security.support import seed_world

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '<svg onload="window.__xss=3"><script>window.__xss=3</script></svg>',
    "javascript:window.__xss=4",
    '"><script>window.__xss=5</script><input value="',
    "' onmouseover='window.__xss=6' x='",
    "</textarea></title></script><script>window.__xss=7</script>",
    '<iframe src="javascript:top.__xss=8"></iframe>',
    '<div <b>broken <a href="javascript:window.__xss=9">open <!-- <p x="',
    '<a href="&#106;avascript:window.__xss=10">entity</a>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=11">',
    '<details open ontoggle="window.__xss=12">',
    "\u202eevil\u202c \u200b<scr\u200bipt>window.__xss=13</script> \ufeff",
    "[click](javascript:window.__xss=14) ![pic](https://evil.example/pixel.png) <b onclick=window.__xss=15>b</b>",
    "{{ 7|add:7 }} {% debug %} ${window.__xss=16} `x`",
]
ALL = " ".join(PAYLOADS)
# Field length limits (model max_length); a field too short for the whole corpus gets one payload per row.
LIMITS = {"project.name": 200, "label.name": 200, "taxonomy.name": 200, "item.external_id": 255, "item.meta.key": 200}
BIG_TEXT = (ALL + " ") * (1_048_576 // (len(ALL) + 1) + 1)
PAYLOAD_USERNAME = '<img src=x onerror="window.__xss=20">'  # 37 characters: fits a username
ADMIN = "admin"


def payload_text(field: str, n: int) -> str:
    limit = LIMITS.get(field)
    if limit is None:
        return f"{ALL} [{field} {n}]"
    return f"{PAYLOADS[n % len(PAYLOADS)]} [{field} {n}]"[:limit]


def _seed() -> dict[str, Any]:
    world = seed_world(payload_text)
    # A user whose name is a payload (commands and the admin can create any username), with an answer on record.
    get_user_model().objects.filter(username="reviewer2").update(username=PAYLOAD_USERNAME)
    # The item the admin is served is 1 MB of payloads.
    lease = Lease.objects.get(pk=world.active_leases[ADMIN])
    Item.objects.filter(pk=lease.item_id).update(text=BIG_TEXT, external_id=payload_text("item.external_id", 99))
    # A draft, so the editor shows payloads in its inputs.
    document = {"name": payload_text("taxonomy.name", 9), "labels": [
        {"key": "ham", "name": payload_text("label.name", 9), "description": ALL,
         "positive_examples": [ALL], "negative_examples": [ALL]},
        {"key": "spam", "name": payload_text("label.name", 10), "description": ALL},
    ]}
    taxonomy_draft_save(actor=world.users["policy_lead"], project=world.project, document=document)
    return {"world": world}


PAGES = [
    ("/", "#main"),
    ("/projects/sms/label/", "#item-text"),
    ("/projects/sms/taxonomy/", "#main"),
    ("/projects/sms/taxonomy/history/", "#main"),
    ("/projects/sms/taxonomy/history/?from=1&to=2", "#main"),
    ("/projects/sms/guidelines/", "#main"),
    ("/projects/sms/guidelines/?version=1", "#main"),
    ("/projects/sms/guidelines/?draft=1", "#main"),
    ("/projects/sms/dashboard/", "#main"),
    ("/projects/sms/adjudication/", "#main"),
]

# Run in the page: everything in the DOM that could only have come from a payload parsed as markup.
DOM_AUDIT = """() => {
  const found = [];
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase(), value = (attr.value || '').trim().toLowerCase();
      if (name.startsWith('on')) found.push(`${el.tagName} ${name}`);
      if (['href', 'src', 'action', 'formaction', 'xlink:href', 'data'].includes(name) &&
          value.replace(/[\\s\\u0000-\\u001f]/g, '').startsWith('javascript:')) {
        found.push(`${el.tagName} ${name}=${value}`);
      }
    }
  }
  for (const s of document.querySelectorAll('script')) {
    if (!s.src && s.type !== 'application/json') found.push('inline script: ' + s.textContent.slice(0, 80));
  }
  // No template or script of Sift creates any of these: one in the DOM came from a payload.
  for (const el of document.querySelectorAll('svg, iframe, img, details, math, object, embed, mglyph, b[onclick]')) {
    found.push('element ' + el.outerHTML.slice(0, 80));
  }
  return found;
}"""

PROBE = """() => {
  const s = document.createElement('script');
  s.textContent = 'window.__probe = 1';
  document.body.appendChild(s);
  return typeof window.__probe;
}"""


def _watch(page: Any, live_url: str) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"dialogs": [], "foreign": [], "csp_headers": []}
    origin = urlsplit(live_url).netloc

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_request(request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and parts.netloc != origin:
            seen["foreign"].append(request.url)

    page.on("dialog", on_dialog)
    page.on("request", on_request)
    return seen


def _open(page: Any, path: str, ready: str) -> list[str]:
    """Load ``path``; problems with its status or its CSP header."""
    response = page.goto(path)
    assert response is not None
    if response.status != 200:
        return [f"{path}: status {response.status}"]
    page.wait_for_selector(ready, state="attached")
    page.wait_for_load_state("networkidle")
    csp = response.headers.get("content-security-policy", "")
    if "script-src 'self'" not in csp or "unsafe-inline" in csp or "unsafe-eval" in csp:
        return [f"{path}: CSP header missing or weak: {csp!r}"]
    return []


def _audit(page: Any, where: str) -> list[str]:
    """Nothing ran, nothing was parsed as markup, and the CSP refuses an inline script (and reports it)."""
    problems: list[str] = []
    if page.evaluate("typeof window.__xss") != "undefined":
        problems.append(f"{where}: a payload ran (window.__xss = {page.evaluate('window.__xss')})")
    found = page.evaluate(DOM_AUDIT)
    if found:
        problems.append(f"{where}: payload markup in the DOM: {found[:5]}")
    violations = page.evaluate("window.__csp")
    if violations:
        problems.append(f"{where}: CSP violations (a payload was parsed as markup): {violations[:5]}")
    if page.errors:
        problems.append(f"{where}: page errors: {page.errors[:3]}")
    if page.evaluate(PROBE) != "undefined":
        problems.append(f"{where}: an injected inline script ran: the CSP is not enforced")
    else:
        try:
            wait_js(page, "() => window.__csp.some(v => v.startsWith('script-src'))", timeout=5)
        except AssertionError:
            problems.append(f"{where}: the refused inline script raised no securitypolicyviolation")
    # (The probe's own refusal is logged as a console error: expected, so forgotten.)
    page.errors.clear()
    return problems


def test_payloads_stay_text_on_every_page(page: Any, live_server: Any) -> None:
    seeded = _seed()
    seen = _watch(page, live_server.url)
    log_in(page, ADMIN)
    problems: list[str] = []
    for path, ready in PAGES:
        opened = _open(page, path, ready)
        if opened:
            problems += opened
            continue
        if path == "/projects/sms/label/":
            # The 1 MB item, served to the admin, is on screen as text: its payloads are characters.
            wait_js(page, "() => document.getElementById('item-text').textContent.length > 1000000")
            assert page.evaluate("document.getElementById('item-text').textContent") == BIG_TEXT
            meta = page.evaluate("document.getElementById('item-meta').textContent")
            assert PAYLOADS[0] in meta and "https://images.example.org/pic.png" in meta
            # Meta image URLs are shown as text, never loaded: the label page renders no images at all.
            assert page.locator("#item-card img").count() == 0
        if path == "/":
            assert PAYLOADS[0] in page.inner_text("#main")
        problems += _audit(page, path)
    assert seen["dialogs"] == []
    assert seen["foreign"] == [], "the browser fetched from another origin"
    assert seeded["world"].project.slug == "sms"
    assert problems == [], "\n".join(problems)


def test_login_page_keeps_payloads_as_text(page: Any, live_server: Any) -> None:
    seen = _watch(page, live_server.url)
    problems = _open(page, "/login/", "#id_username")
    get_user_model().objects.create_user(username=PAYLOAD_USERNAME, password="correct-horse-battery")
    # A hostile next= and a payload username on a failed login: both come back into the page.
    page.goto("/login/?next=javascript:window.__xss=30")
    page.fill("#id_username", PAYLOAD_USERNAME)
    page.fill("#id_password", "wrong password")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.input_value("#id_username") == PAYLOAD_USERNAME
    problems += _audit(page, "failed login")
    # Logging in with next=javascript:... lands on the home page, never on the script URL.
    page.goto("/login/?next=javascript:window.__xss=31")
    page.fill("#id_username", PAYLOAD_USERNAME)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert PAYLOAD_USERNAME in page.inner_text(".topnav .who")
    assert seen["dialogs"] == []
    assert problems == [], "\n".join(problems)


def test_the_audit_catches_markup(page: Any, live_server: Any) -> None:
    """The checks above can fail: markup injected on purpose is found by the DOM audit and refused by the CSP."""
    assert _open(page, "/login/", "#id_username") == []
    assert _audit(page, "clean") == []
    page.evaluate("html => document.body.insertAdjacentHTML('beforeend', html)", PAYLOADS[1] + PAYLOADS[11])
    page.wait_for_timeout(200)
    found = _audit(page, "injected")
    assert any("payload markup in the DOM" in problem and "IMG onerror" in problem for problem in found), found
    assert any("CSP violations" in problem for problem in found), found
    assert page.evaluate("typeof window.__xss") == "undefined"
