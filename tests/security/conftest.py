"""The browser fixtures of tests/frontend (Chromium through Playwright on the live server), for test_xss_pages."""

from __future__ import annotations

from tests.frontend.conftest import chromium, page, sent_tasks

__all__ = ["chromium", "page", "sent_tasks"]
