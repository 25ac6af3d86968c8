"""Issue 16, the export rows: a bare carriage return broke CSV rows, and formula cells went out verbatim.

Every control character must survive CSV into pandas and the csv module unchanged, and a CSV meant for a
spreadsheet must never carry a live formula (OWASP: a leading apostrophe), with ``csv_cells=raw`` for programs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.core.management import call_command

from labeling.services.annotations import annotation_submit
from labeling.services.exports import CSV_CELLS_RULE
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

CONTROL = [chr(c) for c in (*range(1, 32), 127)]  # NUL is refused at import (PostgreSQL cannot store it)
FORMULAS = {"f-eq": "=HYPERLINK(\"https://evil.example\",\"click\")", "f-plus": "+1+1", "f-minus": "-2+3",
            "f-at": "@SUM(A1)", "f-tab": "\t=1", "f-cr": "\r=1", "f-apos": "'=already quoted", "f-safe": "plain"}


@pytest.fixture
def ml(cast: dict[str, Any], api_as: Any) -> Any:
    return api_as(cast["users"]["ml_engineer"])


def _item(cast: dict[str, Any], external_id: str, text: str, **extra: Any) -> None:
    """An item with one answer (exports hold labelled items), labelled through the real queue."""
    ItemFactory(project=cast["project"], external_id=external_id, text=text, **extra)
    reviewer = cast["users"]["reviewer"]
    lease = queue_checkout_next(project=cast["project"], reviewer=reviewer)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"])


def _export(client: Any, **query: str) -> bytes:
    response = client.get("/api/projects/sms/export", {"format": "csv", **query})
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_every_control_character_round_trips_through_csv_into_pandas_and_the_csv_module(
        cast: dict[str, Any], ml: Any) -> None:
    texts = {f"c{ord(ch):02x}": f"before{ch}after" for ch in CONTROL}
    texts["crlf"] = "line one\r\nline two\rthree\nfour"
    texts["trailing-cr"] = "ends with a carriage return\r"
    for external_id, text in texts.items():
        _item(cast, external_id, text, meta={"note": text})
    body = _export(ml, csv_cells="raw")
    frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
    assert list(frame.columns)[:4] == ["external_id", "text", "content_hash", "meta"]
    assert dict(zip(frame["external_id"], frame["text"], strict=True)) == texts
    assert {e: json.loads(m)["note"] for e, m in zip(frame["external_id"], frame["meta"], strict=True)} == texts
    rows = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert {row["external_id"]: row["text"] for row in rows} == texts
    # The default (escaped) export differs only in cells that begin with a formula trigger: none here.
    assert _export(ml) == body


def test_a_bare_carriage_return_is_quoted(cast: dict[str, Any], ml: Any) -> None:
    _item(cast, "cr", "a\rb")
    line = _export(ml).split(b"\n")[1]
    assert line.startswith(b'cr,"a\rb",')


def test_formula_cells_are_escaped_by_default_and_the_escape_is_reversible(cast: dict[str, Any], ml: Any) -> None:
    for external_id, text in FORMULAS.items():
        _item(cast, external_id, text)
    _item(cast, "=ext-id", "external id is a formula")
    frame = pd.read_csv(io.BytesIO(_export(ml)), dtype=str, keep_default_na=False)
    shown = dict(zip(frame["external_id"], frame["text"], strict=True))
    assert shown == {"f-eq": "'=HYPERLINK(\"https://evil.example\",\"click\")", "f-plus": "'+1+1",
                     "f-minus": "'-2+3", "f-at": "'@SUM(A1)", "f-tab": "'\t=1", "f-cr": "'\r=1",
                     "f-apos": "''=already quoted", "f-safe": "plain", "'=ext-id": "external id is a formula"}
    for column in frame.columns:
        assert not frame[column].str.match(r"^[=+\-@\t\r]").any(), column
    # The documented way back: remove one leading apostrophe.
    undone = {k.removeprefix("'"): v.removeprefix("'") for k, v in shown.items()}
    assert undone == {**FORMULAS, "=ext-id": "external id is a formula"}


def test_raw_cells_are_verbatim(cast: dict[str, Any], ml: Any) -> None:
    for external_id, text in FORMULAS.items():
        _item(cast, external_id, text)
    frame = pd.read_csv(io.BytesIO(_export(ml, csv_cells="raw")), dtype=str, keep_default_na=False)
    assert dict(zip(frame["external_id"], frame["text"], strict=True)) == FORMULAS


def test_an_unknown_csv_cells_value_is_named(ml: Any) -> None:
    response = ml.get("/api/projects/sms/export", {"format": "csv", "csv_cells": "none"})
    assert response.status_code == 400
    assert response.json()["detail"] == "csv_cells: 'none' is not one of escaped, raw"


def test_the_command_escapes_by_default_offers_raw_cells_and_the_card_says_which(
        cast: dict[str, Any], tmp_path: Path) -> None:
    _item(cast, "f", "=1+1")
    escaped, raw = tmp_path / "escaped.csv", tmp_path / "raw.csv"
    call_command("export", "--project", "sms", "--format", "csv", "--out", str(escaped), "--card",
                 stdout=io.StringIO())
    call_command("export", "--project", "sms", "--format", "csv", "--out", str(raw), "--csv-raw-cells", "--card",
                 stdout=io.StringIO())
    assert escaped.read_bytes().split(b"\n")[1].startswith(b"f,'=1+1,")
    assert raw.read_bytes().split(b"\n")[1].startswith(b"f,=1+1,")
    for path, mode in ((escaped, "escaped"), (raw, "raw")):
        card = json.loads(Path(f"{path}.card.json").read_text())
        assert card["csv_cells"] == CSV_CELLS_RULE
        assert card["params"]["csv_cells"] == mode
        assert f"- CSV cells: {CSV_CELLS_RULE}" in Path(f"{path}.card.md").read_text()
