"""Browser fixtures and helpers: Debian's Chromium driven by Playwright against pytest-django's live server.

The fixtures are registered once, by tests/conftest.py, so every folder shares ONE session-wide Playwright:
two sync_playwright instances cannot coexist in one process.

Playwright's sync API runs an event loop in the test thread, which trips Django's
async-unsafe guard on every ORM call the test makes; the test thread does not share
connections with the loop, so the guard is switched off for these tests.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = os.environ.get("SIFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password

# Recorded in every page before any script runs: CSP violations (there must be none:
# user data must never be parsed as markup in the first place) and, for the latency
# figure, the time of each key press and of each new item appearing on screen.
INIT_SCRIPT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "") + " " + (e.sample || ""));
});
window.__keys = [];
window.__shown = [];
document.addEventListener("keydown", (e) => { window.__keys.push([e.key, performance.now()]); }, true);
document.addEventListener("DOMContentLoaded", () => {
  const target = document.getElementById("item-external-id");
  if (!target) return;
  new MutationObserver(() => { window.__shown.push([target.textContent, performance.now()]); })
    .observe(target, {childList: true, characterData: true, subtree: true});
});
"""


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    available = os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM) is not None
    from tests.conftest import require_service  # a top-level import would be circular

    require_service("Chromium", available, f"{CHROMIUM} is missing; `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Retrain requests the submits trigger, captured at the Celery app instead of published.

    Without REDIS_URL the broker is a folder under var/ that a running demo worker reads; test
    messages naming test-database project ids must not land there.
    """
    from config.celery import app

    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_options: sent.append(name))
    return sent


@pytest.fixture
def page(chromium: Any, live_server: Any, sent_tasks: list[str]) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the live server, failing the test on any page error."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900},
                                   device_scale_factor=1)
    context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

    def on_console(msg: Any) -> None:
        # Chromium logs every non-2xx fetch as "Failed to load resource"; the tests that expect a
        # 409 assert on the page's own message instead. Anything else at error level is a bug.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            errors.append(f"console.error: {msg.text}")

    page.on("console", on_console)
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


def wait_js(page: Any, predicate: str, arg: Any = None, *, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` (a JS function source) until it returns something truthy; return that.

    Playwright's own wait_for_function polls with eval() inside the page, which our CSP
    (no 'unsafe-eval') rightly refuses; page.evaluate goes through the DevTools protocol instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(predicate, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {predicate}")
        time.sleep(0.005)


def log_in(page: Any, username: str, *, next_url: str = "/") -> None:
    """Log in through the real form, as a reviewer would."""
    page.goto(f"/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_url}")
