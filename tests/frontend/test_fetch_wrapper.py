"""Every page's script talks to the API through the one fetch wrapper, frontend/static/frontend/api.js (same-origin
credentials, the CSRF token, JSON in and out), which base.html loads before any page script."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "frontend" / "static" / "frontend"
BASE = ROOT / "frontend" / "templates" / "frontend" / "base.html"


def test_only_the_wrapper_calls_fetch() -> None:
    pages = sorted(path.name for path in STATIC.glob("*.js"))
    assert {"api.js", "label.js", "taxonomy.js", "dashboard.js", "reveal.js"} <= set(pages)
    callers = [name for name in pages if name != "api.js" and "fetch(" in (STATIC / name).read_text()]
    assert callers == []
    assert "fetch(" in (STATIC / "api.js").read_text()
    # Every page that talks to the server does so through the wrapper (cluster.js and wellness.js only draw what the
    # queue's answer already carries, so they make no request of their own).
    users = [name for name in pages if name != "api.js" and "window.siftApi.request" in (STATIC / name).read_text()]
    assert users == ["dashboard.js", "imports.js", "label.js", "reveal.js", "taxonomy.js"]
    talkers = [name for name in pages if any(word in (STATIC / name).read_text()
                                             for word in ("XMLHttpRequest", "sendBeacon", "EventSource", "WebSocket"))]
    assert talkers == []


def test_base_loads_the_wrapper_before_every_page_script() -> None:
    base = BASE.read_text()
    assert '<script src="{% static \'frontend/api.js\' %}"></script>' in base
    assert base.index("frontend/api.js") < base.index("{% block scripts %}")
