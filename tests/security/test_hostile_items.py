"""Issue 16, the item rows: deep meta, wide CSV headers, the cost and the coverage of masking.

Each test reproduces an attack that got through on the first adversarial run, and asserts the exact outcome.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import pytest
from django.db import connection

from labeling.models import META_MAX_DEPTH, META_TOO_DEEP, Item, Lease
from labeling.services.items_import import MAX_CSV_COLUMNS, MAX_ERROR_CHARS, items_import
from labeling.services.privacy import MAX_MASK_MATCHES, Masker, _compiled, project_privacy_update
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db


def nested(depth: int, leaf: Any = "deep a@b.com") -> Any:
    """``{"k": [[...[leaf]...]]}``: ``depth`` lists and objects inside each other, built without recursion."""
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return {"k": value}


def _deep_json(depth: int) -> str:
    """``nested(depth)`` as JSON text, spelled out: json.dumps itself recurses, and a test's stack is deep."""
    return '{"k": ' + "[" * (depth - 1) + '"deep a@b.com"' + "]" * (depth - 1) + "}"


def _run(project: Any, body: str | bytes, filename: str) -> dict[str, Any]:
    import io

    data = body.encode() if isinstance(body, str) else body
    return items_import(actor=None, project=project, source=io.BytesIO(data), filename=filename).as_dict()


# --- Deep meta ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [META_MAX_DEPTH + 1, 600, 980])
def test_import_refuses_meta_nested_deeper_than_the_cap_per_line(cast: dict[str, Any], depth: int) -> None:
    lines = [json.dumps({"external_id": "ok", "text": "fine", "meta": nested(META_MAX_DEPTH)}),
             '{"external_id": "deep", "text": "hostile", "meta": ' + _deep_json(depth) + "}"]
    summary = _run(cast["project"], "\n".join(lines) + "\n", "items.jsonl")
    assert summary == {"created": 1, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": f"meta: nested more than {META_MAX_DEPTH} levels deep (lists and objects inside each "
                             "other); flatten it"}]}
    assert list(Item.objects.filter(project=cast["project"]).values_list("external_id", flat=True)) == ["ok"]


def _deep_item(cast: dict[str, Any], depth: int = 980) -> Item:
    """A row stored before the cap existed (written directly: the import now refuses it)."""
    item = ItemFactory(project=cast["project"], external_id="deep", text="hostile a@b.com")
    deep = _deep_json(depth)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Item._meta.db_table} SET meta = %s::jsonb WHERE id = %s",  # noqa: S608
                       [deep, item.pk])
    return item


def _shown() -> Any:
    """How a stored meta deeper than the cap reads (labeling/models/items.py MetaField)."""
    return {"meta": META_TOO_DEEP}


@pytest.mark.parametrize("masked", [False, True])
def test_queue_next_reveal_and_adjudication_serve_a_stored_deep_meta(
        cast: dict[str, Any], api_as: Any, masked: bool) -> None:
    if masked:
        project_privacy_update(actor=None, project=cast["project"], mask_pii=True, mask_detectors=["email"])
    item = _deep_item(cast)
    reviewer = api_as(cast["users"]["reviewer"])
    response = reviewer.post("/api/projects/sms/queue/next")
    assert response.status_code == 200
    assert response.json()["item"]["meta"] == _shown()
    assert response.json()["item"]["text"] == ("hostile [email]" if masked else "hostile a@b.com")
    lease_id = response.json()["lease"]["id"]
    assert reviewer.post(f"/api/leases/{lease_id}/submit", {"labels": ["spam"]}, format="json").status_code == 201
    assert Lease.objects.get(pk=lease_id).state == "submitted"

    lead = api_as(cast["users"]["policy_lead"])
    if masked:
        revealed = lead.post(f"/api/projects/sms/items/{item.pk}/reveal", {"reason": "check"}, format="json")
        assert revealed.status_code == 200
        assert revealed.json()["meta"] == _shown()
        assert revealed.json()["text"] == "hostile a@b.com"
    opened = lead.post("/api/projects/sms/adjudications/", {"external_id": "deep", "note": "look"}, format="json")
    assert opened.status_code == 201
    assert opened.json()["item"]["meta"] == _shown()
    page = api_as(cast["users"]["policy_lead"]).get(f"/api/projects/sms/adjudications/{opened.json()['id']}/")
    assert page.status_code == 200


def test_the_masking_walk_is_iterative() -> None:
    rules = Masker(_compiled(("email",), ()))
    value = nested(5_000)  # far beyond the recursion limit: a recursive walk raised RecursionError here
    assert rules.value(value) == {"k": nested(META_MAX_DEPTH, META_TOO_DEEP)["k"]}


# --- Wide CSV headers -----------------------------------------------------------------------------------------------


def test_a_100k_column_csv_header_is_refused_at_once(cast: dict[str, Any]) -> None:
    header = ",".join(f"c{n}" for n in range(100_000))
    start = time.perf_counter()
    summary = _run(cast["project"], header + "\n1,2\n", "items.csv")
    elapsed = time.perf_counter() - start
    assert summary["errors"] == [{"line": 1, "error": f"the CSV header has 100,000 columns; the limit is "
                                                      f"{MAX_CSV_COLUMNS:,}; nothing was read"}]
    assert elapsed < 5, elapsed  # the quadratic duplicate check took minutes


def test_the_duplicate_column_check_is_linear_and_its_message_short(cast: dict[str, Any]) -> None:
    names = [f"column-{n}-{'x' * 60}" for n in range(MAX_CSV_COLUMNS - 2)] * 1
    header = ",".join(["external_id", "text", *names[:-1], names[0]])
    start = time.perf_counter()
    summary = _run(cast["project"], header + "\n", "items.csv")
    assert time.perf_counter() - start < 5
    (error,) = summary["errors"]
    assert error["error"].startswith("the CSV header must name the columns external_id and text, each once "
                                     "(duplicate column column-0-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…; found: ")
    assert len(error["error"]) <= MAX_ERROR_CHARS


def test_a_wide_header_with_many_bad_rows_answers_briefly(cast: dict[str, Any]) -> None:
    names = ["external_id", "text", *(f"meta-column-number-{n:04d}" for n in range(MAX_CSV_COLUMNS - 2))]
    body = ",".join(names) + "\n" + "only,two\n" * 5_000
    tracemalloc.start()
    summary = _run(cast["project"], body, "items.csv")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert summary["errors"][0] == {"line": 2, "error": "has 2 fields; the header has 1,000 (external_id, text, "
                                                        "meta-column-number-0000, meta-column-number-0001, "
                                                        "meta-column-number-0002 and 995 more)"}
    assert len(summary["errors"]) == 5_000
    assert len(json.dumps(summary)) < 5_000 * 200  # every error repeated the 1,000 names: ~150 MB at 10,000 rows
    assert peak < 50 * 1024 * 1024, peak


# --- Masking cost -----------------------------------------------------------------------------------------------------


def test_masking_a_million_characters_is_bounded_with_one_and_twenty_patterns() -> None:
    text = ("héllo wörld a@b.com ü " * 50_000)[:1_000_000]
    one = Masker(_compiled((), (("letter", r"\pL"),)))
    start = time.perf_counter()
    masked = one.text(text)
    assert time.perf_counter() - start < 2  # 17 s to 31 s before (issue 16)
    assert masked.startswith("[letter]" * 5)
    assert masked.count("[letter]") == MAX_MASK_MATCHES
    assert masked.endswith("more characters withheld: more than 10,000 matches to mask; a lead can reveal the item]")
    assert "a@b.com" not in masked
    twenty = Masker(_compiled(("email", "phone", "url"), tuple((f"p{n}", rf"\pL{{{n % 3 + 1}}}") for n in range(17))))
    start = time.perf_counter()
    masked = twenty.text(text)
    assert time.perf_counter() - start < 5  # about 278 s before
    assert "a@b.com" not in masked and "héllo" not in masked


def test_masking_below_the_cap_masks_everything_and_withholds_nothing() -> None:
    rules = Masker(_compiled(("email",), ()))
    text = " ".join(f"u{n}@example.org" for n in range(MAX_MASK_MATCHES))
    assert rules.text(text) == " ".join(["[email]"] * MAX_MASK_MATCHES)


# --- Masking coverage -------------------------------------------------------------------------------------------------


def test_a_masked_reviewer_sees_no_address_in_the_external_id_or_a_meta_key(cast: dict[str, Any], api_as: Any) -> None:
    project_privacy_update(actor=None, project=cast["project"], mask_pii=True, mask_detectors=["email", "phone"])
    ItemFactory(project=cast["project"], external_id="mail from a@b.com", text="hi",
                meta={"c@d.org": "reply to e@f.net", "nested": {"g@h.io": ["+44 20 7946 0958"]}})
    response = api_as(cast["users"]["reviewer"]).post("/api/projects/sms/queue/next")
    assert response.status_code == 200
    assert response.json()["item"] == {"id": response.json()["item"]["id"], "external_id": "mail from [email]",
                                       "text": "hi", "meta": {"[email]": "reply to [email]",
                                                              "nested": {"[email]": ["[phone]"]}},
                                       "masked": True, "image": None}
    history = api_as(cast["users"]["policy_lead"]).get(
        f"/api/projects/sms/items/{response.json()['item']['id']}/history")
    if history.status_code == 200:
        assert "@" not in json.dumps(history.json()["item"])


def test_the_depth_of_stored_meta_is_read_without_decoding_and_brackets_in_strings_do_not_count() -> None:
    from labeling.models import json_text_too_deep

    assert json_text_too_deep(_deep_json(META_MAX_DEPTH + 1)) is True
    assert json_text_too_deep(_deep_json(META_MAX_DEPTH)) is False
    assert json_text_too_deep(json.dumps({"k": "[" * 500 + '\\"{' * 100})) is False
