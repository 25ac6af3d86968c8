"""Issue 16, the account rows: login limits behind a proxy, weak secret keys, project slugs, stale API tokens.

Each test reproduces an attack that got through on the first adversarial run, and asserts the exact outcome.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import AuditEvent, Membership, Project
from labeling.services.projects import membership_add
from tests.config.test_settings import ROOT, _production_env
from tests.conftest import SMS_TAXONOMY, add_project_permission

STRONG_KEY = "k" * 20 + "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5"
LOGIN_RATE = 20  # SIFT_LOGIN_RATE's default, per minute


# --- Weak secret keys ---------------------------------------------------------------------------------------------


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=_production_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("key", [
    "a" * 32,  # the key that got through: long enough for the old test, one distinct character
    "ab" * 30,  # long, but 2 distinct characters (W009 wants 5)
    "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5",  # varied but 38 characters (W009 wants 50)
    "django-insecure-" + "Zq8#x!vT3@pLw9$rN2&bH6^mY4*cJ7(eF1)gD5",  # startproject's throwaway prefix
])
def test_a_key_djangos_deploy_check_warns_about_is_refused(key: str) -> None:
    result = _check(SIFT_SECRET_KEY=key, SIFT_ALLOWED_HOSTS="sift.example.org")
    assert result.returncode == 1
    assert ("SIFT_SECRET_KEY is too weak: use at least 50 characters with at least 5 different ones, not starting "
            "with 'django-insecure-' (Django's check security.W009)") in result.stderr


def test_a_strong_key_starts() -> None:
    result = _check(SIFT_SECRET_KEY=STRONG_KEY, SIFT_ALLOWED_HOSTS="sift.example.org")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


# --- Login limits behind a proxy ----------------------------------------------------------------------------------


def test_one_setting_sets_both_libraries_proxy_handling() -> None:
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps([s.REST_FRAMEWORK['NUM_PROXIES'], s.AXES_CLIENT_IP_CALLABLE]))")
    seen = {}
    for name, extra in {"direct": {}, "proxy": {"SIFT_BEHIND_PROXY": "1"},
                        "two proxies": {"SIFT_BEHIND_PROXY": "1", "SIFT_PROXY_COUNT": "2"}}.items():
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120, capture_output=True, text=True,
                                env=_production_env(SIFT_SECRET_KEY=STRONG_KEY, **extra))
        assert result.returncode == 0, result.stderr
        seen[name] = json.loads(result.stdout)
    callable_path = "labeling.api.authentication.client_ip"
    assert seen == {"direct": [0, callable_path], "proxy": [1, callable_path], "two proxies": [2, callable_path]}


@pytest.fixture
def bob(db: Any) -> Any:
    cache.clear()  # the token throttle's history lives in the cache
    return get_user_model().objects.create_user(username="bob", password="the-right-password")


def _token(password: str, *, remote: str = "127.0.0.1", forwarded: str | None = None) -> int:
    extra: dict[str, Any] = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    response = APIClient().post("/api/auth/token/", {"username": "bob", "password": password}, format="json",
                                **extra)
    return int(response.status_code)


def _num_proxies(settings: Any, count: int) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}


def test_direct_rotating_x_forwarded_for_does_not_dodge_the_login_throttle(bob: Any, settings: Any) -> None:
    settings.AXES_ENABLED = False  # the throttle alone: axes would lock bob out after five
    statuses = [_token("wrong-password", forwarded=f"198.51.100.{n}") for n in range(LOGIN_RATE + 1)]
    assert statuses == [400] * LOGIN_RATE + [429]


def test_behind_a_proxy_the_throttle_keys_on_the_address_the_proxy_saw(bob: Any, settings: Any) -> None:
    _num_proxies(settings, 1)
    settings.AXES_ENABLED = False
    # The client writes the left part; the proxy appends the address it saw. Only that one counts.
    statuses = [_token("wrong-password", forwarded=f"10.0.0.{n}, 203.0.113.5") for n in range(LOGIN_RATE + 1)]
    assert statuses == [400] * LOGIN_RATE + [429]
    # Another client behind the same proxy is not throttled by the first one's attempts.
    assert _token("the-right-password", forwarded="198.51.100.7") == 200


def test_behind_a_proxy_wrong_passwords_from_one_client_do_not_lock_the_user_out_elsewhere(
        bob: Any, settings: Any) -> None:
    _num_proxies(settings, 1)
    attacker = [_token("wrong-password", forwarded="203.0.113.5") for _ in range(6)]
    assert attacker == [400, 400, 400, 400, 429, 429]  # axes: the fifth failure locks (user, client address)
    assert _token("the-right-password", forwarded="198.51.100.7") == 200  # the real user, from elsewhere
    assert _token("the-right-password", forwarded="203.0.113.5") == 429  # the attacker's address stays locked


def test_direct_a_forged_x_forwarded_for_does_not_move_the_axes_lock(bob: Any, settings: Any) -> None:
    attempts = [_token("wrong-password", forwarded=f"198.51.100.{n}") for n in range(5)]
    assert attempts == [400, 400, 400, 400, 429]
    assert _token("the-right-password", forwarded="192.0.2.99") == 429  # same REMOTE_ADDR: still locked


# --- Project slugs --------------------------------------------------------------------------------------------------


def _create(client: APIClient, slug: str, taxonomy: Any = SMS_TAXONOMY) -> Any:
    return client.post("/api/projects/", {"slug": slug, "name": "Probe", "taxonomy": taxonomy}, format="json")


@pytest.mark.django_db
def test_a_user_who_may_not_create_projects_gets_the_same_403_for_taken_and_free_slugs(
        cast: dict[str, Any], api_as: Any) -> None:
    outsider = api_as(cast["users"]["outsider"])
    assert outsider.get("/api/projects/sms/").status_code == 404
    before = (Project.objects.count(), Membership.objects.count(), AuditEvent.objects.count())
    answers = [_create(outsider, "sms"), _create(outsider, "free-slug"), _create(outsider, "sms", taxonomy="junk")]
    assert [(r.status_code, r.json()) for r in answers] == [
        (403, {"detail": "you may not create projects; ask a Sift administrator", "code": "permission_denied"})] * 3
    assert (Project.objects.count(), Membership.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_a_creator_gets_the_same_409_for_a_slug_whether_or_not_they_see_its_project(
        cast: dict[str, Any], api_as: Any) -> None:
    cast["users"]["outsider"].user_permissions.add(add_project_permission())
    member_answer = _create(api_as(cast["users"]["admin"]), "sms")  # admin of sms
    outsider_answer = _create(api_as(cast["users"]["outsider"]), "sms")  # not a member of sms
    expected = {"detail": "the slug 'sms' is not available; choose another", "code": "conflict", "field": "slug"}
    assert (member_answer.status_code, member_answer.json()) == (409, expected)
    assert (outsider_answer.status_code, outsider_answer.json()) == (409, expected)
    created = _create(api_as(cast["users"]["outsider"]), "outsiders-own")
    assert created.status_code == 201
    assert Membership.objects.get(project__slug="outsiders-own").user == cast["users"]["outsider"]


@pytest.mark.django_db
def test_superusers_may_create_and_everyone_may_when_the_setting_says_so(
        cast: dict[str, Any], api_as: Any, settings: Any) -> None:
    root = get_user_model().objects.create_superuser(username="root", password="a-long-enough-password")
    assert _create(api_as(root), "by-root").status_code == 201
    assert _create(api_as(cast["users"]["reviewer"]), "by-reviewer").status_code == 403
    settings.SIFT_PROJECT_CREATORS = "all"
    response = _create(api_as(cast["users"]["reviewer"]), "by-reviewer")
    assert response.status_code == 201
    assert response.json()["role"] == "admin"


# --- API tokens outlive a password change ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_password_change_revokes_the_users_api_tokens(cast: dict[str, Any], api_as: Any) -> None:
    reviewer = cast["users"]["reviewer"]
    stolen = api_as(reviewer)
    assert stolen.get("/api/projects/").status_code == 200
    other_token = Token.objects.create(user=cast["users"]["policy_lead"]).key
    reviewer.set_password("a-brand-new-password")
    reviewer.save()
    assert stolen.get("/api/projects/").status_code == 401
    assert not Token.objects.filter(user=reviewer).exists()
    assert Token.objects.filter(user=cast["users"]["policy_lead"]).values_list("key", flat=True)[0] == other_token
    # The owner logs in with the new password and gets a new, working token.
    fresh = APIClient().post("/api/auth/token/", {"username": "reviewer", "password": "a-brand-new-password"},
                             format="json")
    assert fresh.status_code == 200
    assert fresh.json()["token"] != stolen._credentials["HTTP_AUTHORIZATION"].split()[1]


@pytest.mark.django_db
def test_a_password_reset_through_add_member_revokes_tokens(cast: dict[str, Any], api_as: Any) -> None:
    stolen = api_as(cast["users"]["reviewer"])
    membership_add(actor=None, project=cast["project"], username="reviewer", role="reviewer",
                   password="another-new-password")
    assert stolen.get("/api/projects/").status_code == 401


@pytest.mark.django_db
def test_removing_a_membership_revokes_the_users_api_tokens(cast: dict[str, Any], api_as: Any) -> None:
    stolen = api_as(cast["users"]["reviewer"])
    assert stolen.post("/api/projects/sms/queue/next").status_code in (200, 204)
    out = io.StringIO()
    call_command("remove_member", "--project", "sms", "--username", "reviewer", stdout=out)
    assert out.getvalue() == "reviewer is no longer a member of sms; API tokens revoked.\n"
    assert not Membership.objects.filter(project=cast["project"], user=cast["users"]["reviewer"]).exists()
    assert stolen.post("/api/projects/sms/queue/next").status_code == 401
    event = AuditEvent.objects.filter(action="membership.remove").get()
    assert event.data == {"username": "reviewer", "role": "reviewer", "tokens_revoked": 1, "leases_released": 0}
