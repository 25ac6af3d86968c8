"""Management commands: create_project, add_member, import_items (output, exit status, effects)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from labeling.management.commands.import_items import Command as ImportItemsCommand
from labeling.models import AuditEvent, Item, Label, Membership, Project
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def contract(summary: dict[str, Any]) -> dict[str, Any]:
    """The contract's summary keys; the added ``languages`` key is pinned by its own test below."""
    return {k: v for k, v in summary.items() if k != "languages"}


def call(*args: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def failing(*args: Any) -> tuple[CommandError, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return info.value, out.getvalue()


@pytest.fixture
def taxonomy_file(tmp_path: Path) -> Path:
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(SMS_TAXONOMY))
    return path


# --- create_project ------------------------------------------------------------------------------


def test_create_project(taxonomy_file: Path) -> None:
    out = call("create_project", "--slug", "sms", "--name", "SMS", "--taxonomy", str(taxonomy_file),
               "--overlap", "3", "--strategy", "margin")
    assert out == "Created project 'sms' (taxonomy v1, overlap 3, strategy margin).\n"
    project = Project.objects.get(slug="sms")
    version = project.current_taxonomy_version
    assert version is not None
    assert (project.name, project.overlap, project.strategy, version.number) == ("SMS", 3, "margin", 1)
    assert sorted(Label.objects.filter(version__project=project).values_list("key", flat=True)) == ["ham", "spam"]


def test_create_project_bad_taxonomy_names_the_path_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "Dup", "labels": [{"key": "a", "children": [{"key": "a"}]}]}))
    error, out = failing("create_project", "--slug", "dup", "--name", "Dup", "--taxonomy", str(path))
    assert str(error) == f"{path}: labels[0].children[0].key: duplicate key 'a' (first at labels[0])"
    assert (error.returncode, out) == (1, "")
    assert not Project.objects.filter(slug="dup").exists()


def test_create_project_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n  "labels": [}')
    error, _ = failing("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(path))
    assert str(error) == f"{path}: invalid JSON: Expecting value (line 2, column 14)"
    error, _ = failing("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(tmp_path / "none.json"))
    assert str(error) == f"{tmp_path / 'none.json'}: cannot read the taxonomy (No such file or directory)"
    assert Project.objects.count() == 0


def test_create_project_bad_options(taxonomy_file: Path) -> None:
    error, _ = failing("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(taxonomy_file),
                       "--strategy", "psychic")
    assert str(error) == ("strategy: unknown strategy 'psychic'; choose one of default, random, least_confidence, "
                          "margin, entropy, margin_exploit")
    error, _ = failing("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(taxonomy_file),
                       "--overlap", "0")
    assert str(error) == "overlap: must be between 1 and 20"
    call("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(taxonomy_file))
    error, _ = failing("create_project", "--slug", "x", "--name", "X", "--taxonomy", str(taxonomy_file))
    assert str(error) == "the slug 'x' is not available; choose another"
    assert Project.objects.count() == 1


# --- add_member ---------------------------------------------------------------------------------


def test_add_member_creates_the_user_with_a_password_and_changes_roles() -> None:
    project = ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY)
    out = call("add_member", "--project", "sms", "--username", "rita", "--role", "reviewer",
               "--password", "a-long-enough-passphrase")
    assert out == "rita is reviewer in sms (new user).\n"
    user = get_user_model().objects.get(username="rita")
    assert user.check_password("a-long-enough-passphrase")
    assert Membership.objects.get(project=project, user=user).role == "reviewer"
    assert call("add_member", "--project", "sms", "--username", "rita", "--role", "policy_lead") == (
        "rita is policy_lead in sms.\n")
    assert Membership.objects.get(project=project, user=user).role == "policy_lead"
    assert user.check_password("a-long-enough-passphrase")


def test_add_member_without_password_cannot_log_in() -> None:
    ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY)
    assert call("add_member", "--project", "sms", "--username", "nopw", "--role", "admin") == (
        "nopw is admin in sms (new user, no password set).\n")
    assert not get_user_model().objects.get(username="nopw").has_usable_password()


def test_add_member_errors_change_nothing() -> None:
    ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY)
    error, _ = failing("add_member", "--project", "nope", "--username", "u", "--role", "reviewer")
    assert (str(error), error.returncode) == ("no project with slug 'nope'", 1)
    error, _ = failing("add_member", "--project", "sms", "--username", "u", "--role", "reviewer",
                       "--password", "password")
    assert str(error).startswith("password: ")
    assert not get_user_model().objects.filter(username="u").exists()
    with pytest.raises(CommandError, match="invalid choice: 'boss'"):
        call_command("add_member", "--project", "sms", "--username", "u", "--role", "boss")


# --- import_items --------------------------------------------------------------------------------


@pytest.fixture
def project(db: Any) -> Project:
    return ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY, overlap=2)


def write_jsonl(path: Path, *rows: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_import_items_prints_the_summary_and_succeeds(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", {"external_id": "a", "text": "one"},
                       {"external_id": "b", "text": "two"})
    out = call("import_items", "--project", "sms", str(path))
    assert contract(json.loads(out)) == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}
    again = call("import_items", "--project", "sms", str(path))
    assert contract(json.loads(again)) == {"created": 0, "updated": 0, "unchanged": 2, "errors": []}
    assert Item.objects.filter(project=project).count() == 2


def test_import_items_reports_the_languages_and_recommends_the_multilingual_tier(
        project: Project, tmp_path: Path) -> None:
    rows = [{"external_id": f"ar{i}", "text": f"مرحبا، هل يمكنك مساعدتي في طلبي رقم {i} من فضلك؟"} for i in range(15)]
    rows += [{"external_id": f"en{i}", "text": f"Could you help me with my order number {i}, please?"}
             for i in range(10)]
    rows.append({"external_id": "emoji", "text": "🙂🙂 12345"})
    out = call("import_items", "--project", "sms", str(write_jsonl(tmp_path / "mixed.jsonl", *rows)))
    assert json.loads(out)["languages"] == {"counts": {"ar": 15, "en": 10}, "undetermined": 1,
                                            "recommended_embedder": "multilingual"}
    assert dict(Item.objects.filter(project=project, external_id__in=["ar3", "en3", "emoji"])
                .values_list("external_id", "language")) == {"ar3": "ar", "en3": "en", "emoji": ""}


def test_import_items_with_errors_exits_1_after_printing_the_summary(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "items.csv.gz"
    path.write_bytes(gzip.compress(b"external_id,text\na,one\nb,\n"))
    error, out = failing("import_items", "--project", "sms", str(path))
    assert contract(json.loads(out)) == {"created": 1, "updated": 0, "unchanged": 0,
                                         "errors": [{"line": 3, "error": "text: must not be empty"}]}
    assert (error.returncode, str(error)) == (1, "1 row(s) had errors; the valid rows were imported")
    assert list(Item.objects.filter(project=project).values_list("external_id", flat=True)) == ["a"]


def test_import_items_atomic_imports_nothing(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", {"external_id": "a", "text": "one"}, {"external_id": "b"})
    error, out = failing("import_items", "--project", "sms", str(path), "--atomic")
    assert contract(json.loads(out)) == {"created": 0, "updated": 0, "unchanged": 0,
                                         "errors": [{"line": 2, "error": "text: required"}]}
    assert (error.returncode, str(error)) == (1, "1 row(s) had errors; nothing was imported (--atomic)")
    assert Item.objects.filter(project=project).count() == 0


def test_import_items_gold(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gold.jsonl", {"external_id": "g", "text": "WIN", "label": "spam"})
    assert json.loads(call("import_items", "--project", "sms", str(path), "--gold"))["created"] == 1
    assert Item.objects.values_list("is_gold", "gold_labels").get() == (True, ["spam"])


def test_import_items_unknown_project_or_file(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", {"external_id": "a", "text": "one"})
    error, out = failing("import_items", "--project", "nope", str(path))
    assert (str(error), error.returncode, out) == ("no project with slug 'nope'", 1, "")
    error, _ = failing("import_items", "--project", "sms", str(tmp_path / "missing.jsonl"))
    assert str(error) == f"{tmp_path / 'missing.jsonl'}: no such file"
    assert Item.objects.count() == 0
    assert not AuditEvent.objects.filter(action="items.import").exists()


@pytest.mark.parametrize(("rows", "status"), [
    ([{"external_id": "a", "text": "ok"}], 0),
    ([{"external_id": "a", "text": "ok"}, {"text": "no id"}], 1),
])
def test_import_items_process_exit_status(project: Project, tmp_path: Path, rows: list[dict[str, Any]], status: int,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The real command-line path (run_from_argv), as `manage.py import_items` runs it."""
    # run_from_argv closes the connections when it ends, which would end the test's transaction.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    path = write_jsonl(tmp_path / "items.jsonl", *rows)
    argv = ["manage.py", "import_items", "--project", "sms", str(path)]
    if status:
        with pytest.raises(SystemExit) as info:
            ImportItemsCommand().run_from_argv(argv)
        assert info.value.code == status
    else:
        ImportItemsCommand().run_from_argv(argv)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["created"] == 1
    assert ("had errors" in captured.err) == bool(status)
