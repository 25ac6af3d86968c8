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
from labeling.models import Annotation, AuditEvent, Item, Lease, Membership, Project, TaxonomyVersion
from labeling.services.annotations import annotation_submit
from labeling.services.privacy import items_delete
from labeling.services.queues import queue_checkout_next
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save

pytestmark = pytest.mark.django_db

EXPECTED_ROLES = {"admin": "admin", "lead": "policy_lead", "reviewer1": "reviewer", "reviewer2": "reviewer",
                  "engineer": "ml_engineer"}


def load_demo(*args: str) -> str:
    out = io.StringIO()
    call_command("load_demo", *args, stdout=out)
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
    assert ("Demo project 'sms-demo' (created): pool 1500 created, 0 already present; "
            "gold 30 created, 0 already present.") in first_out

    second_out = load_demo()
    assert password not in second_out
    assert f"Password: the one in {data_dir / 'demo_password'}" in second_out
    assert ("Demo project 'sms-demo' (already there, kept as it is): pool 0 created, 1500 already present; "
            "gold 0 created, 30 already present.") in second_out
    assert "kept as changed in the demo" not in second_out
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
    # Two import events on the first run; the second run imports nothing and so records nothing.
    assert AuditEvent.objects.filter(action="items.import").count() == 2


def test_make_demos_quiet_load_hashes_once_and_prints_only_the_new_password(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-v 0 (the Makefile's): the banner of run_demo names the users and where the password is, so load_demo
    prints only a newly generated password. A start computes one password hash and a restart checks one."""
    from django.contrib.auth import hashers

    from labeling.management.commands import load_demo as command

    calls = {"make": 0, "check": 0}
    make, check = hashers.make_password, hashers.check_password

    def counting_make(*args: Any, **kwargs: Any) -> str:
        calls["make"] += 1
        return make(*args, **kwargs)

    def counting_check(*args: Any, **kwargs: Any) -> bool:
        calls["check"] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(command, "make_password", counting_make)
    monkeypatch.setattr(command, "check_password", counting_check)
    quiet = io.StringIO()
    call_command("load_demo", verbosity=0, stdout=quiet)
    password = (data_dir / "demo_password").read_text().strip()
    assert quiet.getvalue() == (f"Demo password for all five users (shown once; kept in {data_dir / 'demo_password'})"
                                f": {password}\n")
    assert calls == {"make": 1, "check": 0}

    calls.update(make=0, check=0)
    again = io.StringIO()
    call_command("load_demo", verbosity=0, stdout=again)
    assert again.getvalue() == ""
    assert calls == {"make": 0, "check": 1}
    users = get_user_model().objects.all()
    assert users.count() == 5 and all(user.check_password(password) for user in users)


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


def users_state() -> dict[str, tuple[str, bool, bool, bool]]:
    return {u.username: (u.password, u.is_active, u.is_superuser, u.is_staff) for u in get_user_model().objects.all()}


def everything() -> dict[str, Any]:
    """Every row a demo user's work can touch, exactly (ids, timestamps and password hashes included)."""
    project = Project.objects.get(slug="sms-demo")
    return {
        "project": Project.objects.filter(pk=project.pk).values().get(),
        "taxonomy_versions": list(TaxonomyVersion.objects.filter(project=project).order_by("pk")
                                  .values_list("pk", "number", "status")),
        "items": list(Item.objects.filter(project=project).order_by("pk").values_list(
            "pk", "external_id", "content_hash", "meta", "is_gold", "gold_labels", "n_required", "n_done", "boost",
            "updated_at")),
        "annotations": list(Annotation.objects.order_by("pk").values_list(
            "pk", "item_id", "reviewer__username", "labels", "mapped_labels", "mapped_taxonomy_version_id",
            "gold_correct")),
        "leases": list(Lease.objects.order_by("pk").values_list("pk", "item_id", "reviewer_id")),
        "users": users_state(),
        "memberships": dict(Membership.objects.filter(project=project).values_list("user__username", "role")),
        "audit": list(AuditEvent.objects.order_by("pk").values_list("pk", "action")),
    }


def label(username: str, answers: list[str]) -> list[int]:
    """``username`` labels len(answers) items through the real queue: checkout, then submit."""
    project = Project.objects.get(slug="sms-demo")
    reviewer = get_user_model().objects.get(username=username)
    done = []
    for answer in answers:
        lease = queue_checkout_next(project=project, reviewer=reviewer)
        assert lease is not None
        annotation, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=[answer])
        assert created
        done.append(annotation.pk)
    return done


def lab(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "name": key.title(), **extra}


# Each change makes the shipped gold answer "spam" invalid in the new version: renamed away, no longer a leaf,
# or deprecated. Re-importing the gold file (what load_demo did) failed on every one of them.
TAXONOMY_CHANGES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "rename": ([lab("ham"), lab("junk")], [{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}]),
    "split": ([lab("ham"), lab("spam", children=[lab("spam/prize"), lab("spam/phishing")])],
              [{"kind": "split", "sources": ["spam"], "targets": ["spam/prize", "spam/phishing"],
                "requeue_priority": 3}]),
    "deprecate": ([lab("ham"), lab("spam", deprecated=True), lab("unwanted")],
                  [{"kind": "deprecate", "sources": ["spam"], "requeue_priority": 2}]),
}


def publish(labels: list[dict[str, Any]], migrations: list[dict[str, Any]]) -> TaxonomyVersion:
    project = Project.objects.get(slug="sms-demo")
    lead = get_user_model().objects.get(username="lead")
    document = {"name": "SMS moderation", "multi_label": False, "labels": labels}
    taxonomy_draft_save(actor=lead, project=project, document=document, migrations=migrations)
    return taxonomy_draft_publish(actor=lead, project=project, changelog="the lead's change")


@pytest.mark.parametrize("change", sorted(TAXONOMY_CHANGES))
def test_load_demo_after_a_taxonomy_publish_succeeds_and_changes_nothing(data_dir: Path, change: str) -> None:
    load_demo()
    label("reviewer1", ["spam", "ham", "spam"])
    label("reviewer2", ["ham", "spam"])
    version = publish(*TAXONOMY_CHANGES[change])
    assert version.number == 2
    label("reviewer2", ["ham"])  # under v2
    before = everything()
    assert len(before["annotations"]) == 6
    assert before["project"]["current_taxonomy_version_id"] == version.pk

    out = load_demo()

    assert ("Demo project 'sms-demo' (already there, kept as it is): pool 0 created, 1500 already present; "
            "gold 0 created, 30 already present.") in out
    assert everything() == before
    assert load_demo() == out  # and again: a fixed point


def test_load_demo_keeps_what_users_changed_and_reset_users_restores_it(data_dir: Path) -> None:
    load_demo()
    password = (data_dir / "demo_password").read_text().strip()
    reviewer1 = get_user_model().objects.get(username="reviewer1")
    reviewer1.set_password("reviewer1-own-secret")
    reviewer1.save()
    label("reviewer2", ["ham"])
    Membership.objects.filter(user__username="lead").update(role="reviewer")
    Membership.objects.filter(user__username="engineer").delete()
    get_user_model().objects.filter(username="admin").update(is_superuser=False)
    engineer = get_user_model().objects.get(username="engineer")
    engineer.is_active = False
    engineer.save()
    get_user_model().objects.filter(username="reviewer2").update(username="reviewer2-renamed")
    before = users_state()

    out = load_demo()

    after = users_state()
    # reviewer2 was renamed away, so the demo's reviewer2 is created again; nobody else changed.
    assert {name: state for name, state in after.items() if name != "reviewer2"} == before
    assert get_user_model().objects.get(username="reviewer2").check_password(password)
    assert dict(Membership.objects.values_list("user__username", "role")) == {
        "admin": "admin", "lead": "reviewer", "reviewer1": "reviewer", "reviewer2": "reviewer",
        "reviewer2-renamed": "reviewer"}
    assert [line.strip() for line in out.splitlines() if line.startswith("  ")] == [
        "admin is no longer a superuser",
        "lead is reviewer in 'sms-demo' (the demo made them policy_lead)",
        "reviewer1 has a password of their own, not the demo password",
        "reviewer2 was missing and has been created again",
        "engineer is not a member of 'sms-demo' (the demo made them ml_engineer)",
        "engineer is deactivated",
        "(kept as changed in the demo; `manage.py load_demo --reset-users` restores them)",
    ]
    assert password not in out

    out = load_demo("--reset-users")

    assert "kept as changed in the demo" not in out
    users = {u.username: u for u in get_user_model().objects.all()}
    assert all(users[name].check_password(password) for name in EXPECTED_ROLES)
    assert users["reviewer2-renamed"].password == before["reviewer2-renamed"][0]
    assert (users["admin"].is_superuser, users["admin"].is_staff, users["engineer"].is_active) == (True, True, True)
    assert dict(Membership.objects.exclude(user__username="reviewer2-renamed")
                .values_list("user__username", "role")) == EXPECTED_ROLES


def test_load_demo_reapplies_sift_demo_password_only_when_it_changes(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEMO_PASSWORD", "correct-horse-demo")
    load_demo()
    assert "correct-horse-demo" not in (data_dir / "demo_password_applied").read_text()
    assert stat.S_IMODE((data_dir / "demo_password_applied").stat().st_mode) == 0o600
    reviewer1 = get_user_model().objects.get(username="reviewer1")
    reviewer1.set_password("reviewer1-own-secret")
    reviewer1.save()

    load_demo()  # the same $SIFT_DEMO_PASSWORD: reviewer1's own password stays
    assert get_user_model().objects.get(username="reviewer1").check_password("reviewer1-own-secret")

    monkeypatch.setenv("SIFT_DEMO_PASSWORD", "a-new-demo-password")
    load_demo()  # a new one: the operator asked for it, every demo user gets it
    assert all(user.check_password("a-new-demo-password") for user in get_user_model().objects.all())

    # A marker written for another database (a test run, another DATABASE_URL) says nothing about this one.
    marker = json.loads((data_dir / "demo_password_applied").read_text())
    (data_dir / "demo_password_applied").write_text(json.dumps({**marker, "database": "sqlite:::elsewhere"}))
    reviewer1 = get_user_model().objects.get(username="reviewer1")
    reviewer1.set_password("reviewer1-own-secret")
    reviewer1.save()
    load_demo()
    assert get_user_model().objects.get(username="reviewer1").check_password("a-new-demo-password")


def test_load_demo_leaves_deleted_items_deleted(data_dir: Path) -> None:
    load_demo()
    project = Project.objects.get(slug="sms-demo")
    items_delete(actor=None, project=project, external_ids=["sms-297", "sms-2108", "sms-3082"],
                 reason="subject request")
    before = everything()

    out = load_demo()

    assert ("pool 0 created, 1498 already present, 2 deleted in the demo (left deleted); "
            "gold 0 created, 29 already present, 1 deleted in the demo (left deleted).") in out
    assert everything() == before


def test_load_demo_fills_in_missing_rows_and_leaves_out_the_ones_that_no_longer_validate(data_dir: Path) -> None:
    """A first load cut short (rows missing, no tombstone) followed by a rename: the restart still succeeds."""
    load_demo()
    gold = {row["external_id"]: row["label"] for row in read_jsonl_gz(DEMO_DIR / "sms_gold.jsonl.gz")}
    missing_ham = sorted(ext for ext, answer in gold.items() if answer == "ham")[:2]
    missing_spam = sorted(ext for ext, answer in gold.items() if answer == "spam")[:1]
    Item.objects.filter(external_id__in=missing_ham + missing_spam + ["sms-297"]).delete()
    publish(*TAXONOMY_CHANGES["rename"])

    out = load_demo()

    assert ("pool 1 created, 1499 already present; gold 2 created, 27 already present, "
            "1 not valid any more (left out).") in out
    assert f"  left out: sms_gold.jsonl.gz {missing_spam[0]!r}: label: unknown label 'spam'" in out
    project = Project.objects.get(slug="sms-demo")
    assert dict(Item.objects.filter(project=project, external_id__in=missing_ham + missing_spam + ["sms-297"])
                .values_list("external_id", "gold_labels")) == {
        missing_ham[0]: ["ham"], missing_ham[1]: ["ham"], "sms-297": None}
