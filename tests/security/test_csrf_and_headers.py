"""CSRF on every session-authenticated write, token auth exempt by design, and the production security settings.

A browser session is what a cross-site request forges, so every write a session can make must carry the CSRF
token: the API's (DRF's SessionAuthentication enforces it) and the pages' forms (CsrfViewMiddleware). A token
client sends ``Authorization`` explicitly, which a foreign site cannot make a browser do, so it is exempt.
tests/config/test_settings.py covers the secret key, ``check --deploy``, cookies and lockout; this file adds
the production values the issue names (HSTS, nosniff, frame-deny, an enforced CSP) as the server sends them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.security.support import World, seed_world, table_fingerprint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(db: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    from config.celery import app

    settings.EXPORT_ROOT = tmp_path / "exports"
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)
    return seed_world()


def _writes(world: World) -> list[tuple[str, str, str, Any, str]]:
    """(method, path, role, body, content type): session writes that succeed with their CSRF token."""
    lease = world.active_leases["reviewer"]
    return [
        ("post", "/api/projects/sms/queue/next", "reviewer", None, "application/json"),
        ("post", f"/api/leases/{lease}/renew", "reviewer", None, "application/json"),
        ("post", f"/api/leases/{lease}/submit", "reviewer", {"labels": ["spam"]}, "application/json"),
        ("put", "/api/projects/sms/taxonomy/draft", "policy_lead",
         {"name": "T", "labels": [{"key": "ham", "name": "Ham"}]}, "application/json"),
        ("post", "/api/projects/sms/exports/", "ml_engineer", {"name": "csrf-probe"}, "application/json"),
        ("post", f"/api/projects/sms/adjudications/{world.adjudication_pending}/decide", "policy_lead",
         {"labels": ["spam"]}, "application/json"),
        ("post", "/api/projects/sms/items/import", "ml_engineer", '{"external_id": "c1", "text": "hi"}\n',
         "application/x-ndjson"),
        ("post", "/api/projects/", "admin", {"slug": "csrf-new", "name": "N",
                                                "taxonomy": {"name": "T", "labels": [{"key": "a", "name": "A"}]}},
         "application/json"),
    ]


def _send(client: Client, method: str, path: str, body: Any, content_type: str, **extra: Any) -> Any:
    data = json.dumps(body) if content_type == "application/json" and body is not None else (body or "")
    return getattr(client, method)(path, data=data, content_type=content_type, **extra)


def test_session_writes_without_the_csrf_token_are_403_and_change_nothing(world: World) -> None:
    for method, path, role, body, content_type in _writes(world):
        client = Client(enforce_csrf_checks=True)
        client.force_login(world.users[role])
        before = table_fingerprint()
        response = _send(client, method, path, body, content_type)
        assert response.status_code == 403, (path, response.status_code, response.content[:200])
        assert "CSRF" in response.json()["detail"], path
        assert table_fingerprint() == before, path


def test_the_same_session_writes_succeed_with_the_token(world: World) -> None:
    """So the 403 above is the missing token, not the request."""
    for method, path, role, body, content_type in _writes(world):
        client = Client(enforce_csrf_checks=True)
        client.force_login(world.users[role])
        token = client.get("/").cookies["csrftoken"].value  # the pages set the cookie; label.js reads a meta tag
        response = _send(client, method, path, body, content_type, HTTP_X_CSRFTOKEN=token)
        # 202: a snapshot request is accepted and exported by a worker.
        assert response.status_code in (200, 201, 202), (path, response.status_code, response.content[:200])


def test_page_forms_need_the_token_too(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["policy_lead"])
    before = table_fingerprint()
    decide = client.post("/projects/sms/adjudication/", {"adjudication": world.adjudication_pending,
                                                         "labels": ["spam"]})
    assert decide.status_code == 403
    logout = client.post("/logout/")
    assert logout.status_code == 403
    assert table_fingerprint() == before
    assert client.get("/").status_code == 200  # still logged in: the forged logout did nothing


def test_token_auth_needs_no_csrf_token(world: World) -> None:
    from rest_framework.authtoken.models import Token

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.users['reviewer']).key}")
    lease = world.active_leases["reviewer"]
    response = client.post(f"/api/leases/{lease}/submit", {"labels": ["spam"]}, format="json")
    assert response.status_code == 201


def test_api_answers_carry_the_security_headers(world: World, client: Any) -> None:
    client.force_login(world.users["admin"])
    for path in ("/api/projects/", "/api/projects/sms/stats/", "/projects/sms/dashboard/", "/login/"):
        response = client.get(path)
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], path
        assert "Content-Security-Policy-Report-Only" not in response, path


# --- Production values, as a production process computes and sends them -------------------------------------------

PRODUCTION_PROBE = """
import json, django
from django.conf import settings
django.setup()
from django.test import Client
r = Client().get("/login/", secure=True, HTTP_HOST="sift.example.org")
plain = Client().get("/login/", HTTP_HOST="sift.example.org")
print(json.dumps({
    "debug": settings.DEBUG,
    "hosts": settings.ALLOWED_HOSTS,
    "session_secure": settings.SESSION_COOKIE_SECURE, "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "session_httponly": settings.SESSION_COOKIE_HTTPONLY, "session_samesite": settings.SESSION_COOKIE_SAMESITE,
    "validators": [v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS],
    "axes": settings.AXES_ENABLED,
    "status": r.status_code, "plain_status": plain.status_code, "plain_location": plain.get("Location"),
    "headers": {k: v for k, v in r.headers.items()},
}))
"""


def test_production_sends_hsts_nosniff_frame_deny_and_an_enforced_csp(tmp_path: Path) -> None:
    # (The browser fixtures set DJANGO_ALLOW_ASYNC_UNSAFE for this process; production never has it.)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIFT_", "PYTEST", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "SIFT_DATA_DIR": str(tmp_path),
                "SIFT_SECRET_KEY": "p" * 20 + "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5",
                "SIFT_ALLOWED_HOSTS": "sift.example.org"})
    result = subprocess.run([sys.executable, "-c", PRODUCTION_PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["debug"] is False
    assert facts["hosts"] == ["sift.example.org"]
    assert facts["session_secure"] is facts["csrf_secure"] is facts["session_httponly"] is True
    assert facts["session_samesite"] == "Lax"
    assert facts["validators"] == ["UserAttributeSimilarityValidator", "MinimumLengthValidator",
                                   "CommonPasswordValidator", "NumericPasswordValidator",
                                   "RevokeTokensOnPasswordChange"]  # refuses nothing; revokes API tokens
    assert facts["axes"] is True
    # Plain HTTP is redirected to HTTPS; the HTTPS answer carries the headers.
    assert facts["plain_status"] == 301
    assert facts["plain_location"] == "https://sift.example.org/login/"
    assert facts["status"] == 200
    headers = {k.lower(): v for k, v in facts["headers"].items()}
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    csp = dict(d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";") if d.strip())
    assert "content-security-policy-report-only" not in headers
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["form-action"] == "'self'"
    assert "unsafe" not in headers["content-security-policy"]
