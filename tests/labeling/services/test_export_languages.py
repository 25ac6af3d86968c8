"""The export's language filter (``language=hi,ar``; ``und`` for undetermined): exact rows on both read paths,
recorded in the dataset card, bad codes refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labeling.services.annotations import annotation_submit
from labeling.services.errors import ValidationFailed
from labeling.services.exports import export_card, export_params_parse, export_prepare, export_stream
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def _answered_project() -> Any:
    project = ProjectFactory()
    for language, name in (("hi", "h1"), ("ar", "a1"), ("", "u1"), (None, "n1"), ("hi", "h2")):
        ItemFactory(project=project, external_id=name, language=language)
    user = member(project, username="rev", role="reviewer")
    while (lease := queue_checkout_next(project=project, reviewer=user)) is not None:
        annotation_submit(lease_id=lease.pk, reviewer=user, labels=["ok"])
    return project


@pytest.mark.parametrize("raw", [False, True])  # raw exports take the Python read path on PostgreSQL too
@pytest.mark.parametrize(("language", "expected"), [("hi", ["h1", "h2"]), ("ar,HI", ["a1", "h1", "h2"]),
                                                    ("und", ["n1", "u1"]), ("", ["a1", "h1", "h2", "n1", "u1"])])
def test_export_rows_are_the_items_of_the_languages_asked_for(language: str, expected: list[str], raw: bool) -> None:
    project = _answered_project()
    params = export_params_parse({"language": language, "raw": "true" if raw else "false"})
    prepared = export_prepare(project=project, params=params, actor=None, audit=False)
    rows = [json.loads(line) for line in b"".join(export_stream(prepared)).decode().splitlines()]
    assert sorted(row["external_id"] for row in rows) == expected
    card = export_card(prepared)
    assert card["params"].get("languages") == (sorted({c.lower() for c in language.split(",")}) if language
                                                    else None)


def test_a_bad_language_code_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="'hindi' is not a language code"):
        export_params_parse({"language": "hindi"})


def test_the_export_command_and_snapshots_take_the_filter(tmp_path: Any) -> None:
    from django.core.management import call_command

    from labeling.services.exports import export_snapshot_create
    project = _answered_project()
    out = tmp_path / "hi.jsonl"
    call_command("export", "--project", project.slug, "--format", "jsonl", "--language", "hi", "--out", str(out),
                 stdout=__import__("io").StringIO())
    assert sorted(json.loads(line)["external_id"] for line in out.read_text().splitlines()) == ["h1", "h2"]
    snapshot = export_snapshot_create(project=project, actor=None, name="arabic",
                                      params=export_params_parse({"language": "ar", "format": "jsonl"}))
    assert (snapshot.row_count, snapshot.params["languages"]) == (1, ["ar"])
