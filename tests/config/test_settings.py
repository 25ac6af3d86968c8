"""Secure-by-default settings: no default secret, clean deploy check, headers, cookies, closed signup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**extra: str) -> dict[str, str]:
    # A production process inherits none of the test run's switches (the browser tests set
    # DJANGO_ALLOW_ASYNC_UNSAFE in os.environ, which --deploy rightly rejects).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIFT_", "PYTEST")) and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "SIFT_DATA_DIR": "/tmp/sift-settings-test"})
    env.update(extra)
    return env


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=_production_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "SIFT_SECRET_KEY is not set" in result.stderr


def test_short_secret_key_is_refused() -> None:
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT,
                            env=_production_env(SIFT_SECRET_KEY="short"), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "SIFT_SECRET_KEY is too weak: use at least 50 characters" in result.stderr


def test_deploy_check_is_clean_in_production_settings() -> None:
    env = _production_env(SIFT_SECRET_KEY="k" * 20 + "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5",
                          SIFT_ALLOWED_HOSTS="sift.example.org")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_is_off_by_default() -> None:
    code = "from django.conf import settings; import django; django.setup(); print(settings.DEBUG)"
    env = _production_env(SIFT_SECRET_KEY="x" * 20 + "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.django_db
def test_pages_carry_security_headers(client: Any) -> None:
    response = client.get("/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_httponly_and_samesite(client: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_user(username="amy", password="a-long-enough-password")
    login_page = client.get("/login/")
    token = login_page.cookies["csrftoken"]
    assert token["httponly"] is True
    assert token["samesite"] == "Lax"
    client.post("/login/", {"username": "amy", "password": "a-long-enough-password"})
    assert client.cookies["sessionid"]["httponly"] is True
    assert client.cookies["sessionid"]["samesite"] == "Lax"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/signup/", "/accounts/signup/", "/api/auth/register/", "/api/users/"])
def test_signup_is_closed(client: Any, path: str) -> None:
    assert client.get(path).status_code == 404
    assert client.post(path, {"username": "mallory", "password": "pw"}).status_code in (403, 404)


@pytest.mark.django_db
def test_login_locks_out_after_repeated_failures(client: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_user(username="bob", password="the-right-password")
    statuses = [client.post("/login/", {"username": "bob", "password": "wrong"}).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    locked = client.post("/login/", {"username": "bob", "password": "the-right-password"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
