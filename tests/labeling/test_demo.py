"""load_demo: the demo project, users and sample, idempotent across runs."""

from __future__ import annotations

import gzip
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from labeling.management.commands.load_demo import DEMO_DIR
from labeling.models import AuditEvent, Item, Membership, Project

pytestmark = pytest.mark.django_db

EXPECTED_ROLES = {"admin": "admin", "lead": "policy_lead", "reviewer1": "reviewer", "reviewer2": "reviewer",
                  "engineer": "ml_engineer"}


def load_demo() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, Any]:
    project = Project.objects.get(slug="sms-demo")
    items = Item.objects.filter(project=project)
    return {
        "projects": Project.objects.count(),
        "users": get_user_model().objects.count(),
        "memberships": dict(Membership.objects.filter(project=project).values_list("user__username", "role")),
        "items": items.count(),
        "gold": items.filter(is_gold=True).count(),
        "gold_answers": dict(items.filter(is_gold=True).values_list("external_id", "gold_labels")),
        "n_required": set(items.values_list("n_required", flat=True)),
        "updated_at": max(items.values_list("updated_at", flat=True)),
        "audit_non_import": AuditEvent.objects.exclude(action="items.import").count(),
    }


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings.DATA_DIR = tmp_path
    monkeypatch.delenv("SIFT_DEMO_PASSWORD", raising=False)
    return tmp_path


def test_fixture_files_have_the_documented_shape() -> None:
    pool, gold = (read_jsonl_gz(DEMO_DIR / name) for name in ("sms_items.jsonl.gz", "sms_gold.jsonl.gz"))
    assert (len(pool), len(gold)) == (1_500, 30)
    assert {label: sum(1 for row in gold if row["label"] == label) for label in ("ham", "spam")} == {
        "ham": 20, "spam": 10}
    assert sum(1 for row in pool if row["label"] == "spam") == 184
    assert not {row["text"] for row in pool} & {row["text"] for row in gold}
    size = sum((DEMO_DIR / name).stat().st_size for name in ("sms_items.jsonl.gz", "sms_gold.jsonl.gz"))
    assert size < 300_000
    assert "CC BY 4.0" in (DEMO_DIR / "ATTRIBUTION.md").read_text()


def test_load_demo_twice_is_idempotent_and_prints_the_password_once(data_dir: Path) -> None:
    first_out = load_demo()
    first = snapshot()
    password = (data_dir / "demo_password").read_text().strip()
    assert stat.S_IMODE((data_dir / "demo_password").stat().st_mode) == 0o600
    assert len(password) == 16
    assert first_out.count(password) == 1
    assert "pool 1500 created, 0 unchanged, 0 updated; gold 30 created, 0 unchanged, 0 updated." in first_out

    second_out = load_demo()
    assert password not in second_out
    assert f"Password: the one in {data_dir / 'demo_password'}" in second_out
    assert "pool 0 created, 1500 unchanged, 0 updated; gold 0 created, 30 unchanged, 0 updated." in second_out
    second = snapshot()
    assert first == second
    assert second["projects"] == 1
    assert second["users"] == 5
    assert second["memberships"] == EXPECTED_ROLES
    assert (second["items"], second["gold"], second["n_required"]) == (1_530, 30, {2})
    assert sorted(set(map(tuple, second["gold_answers"].values()))) == [("ham",), ("spam",)]

    project = Project.objects.get(slug="sms-demo")
    assert (project.overlap, project.gold_rate, len(project.seed_queries)) == (2, 0.05, 4)
    version = project.current_taxonomy_version
    assert version is not None and version.number == 1
    users = {user.username: user for user in get_user_model().objects.all()}
    assert all(user.check_password(password) for user in users.values())
    assert (users["admin"].is_superuser, users["admin"].is_staff) == (True, True)
    assert not any(user.is_superuser for name, user in users.items() if name != "admin")
    # Two import events per run, nothing else repeated.
    assert AuditEvent.objects.filter(action="items.import").count() == 4


def test_load_demo_uses_the_configured_password(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEMO_PASSWORD", "correct-horse-demo")
    out = load_demo()
    assert "correct-horse-demo" not in out
    assert not (data_dir / "demo_password").exists()
    assert all(user.check_password("correct-horse-demo") for user in get_user_model().objects.all())
    monkeypatch.setenv("SIFT_DEMO_PASSWORD", "another-demo-password")
    load_demo()
    assert all(user.check_password("another-demo-password") for user in get_user_model().objects.all())
    assert get_user_model().objects.count() == 5


def test_load_demo_repairs_a_changed_role(data_dir: Path) -> None:
    load_demo()
    Membership.objects.filter(user__username="reviewer1").update(role="admin")
    load_demo()
    assert dict(Membership.objects.values_list("user__username", "role")) == EXPECTED_ROLES
