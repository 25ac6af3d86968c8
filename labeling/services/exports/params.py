"""Export parameters: the formats, aggregations and column constants, ``ExportParams`` and its parser.

Parameters are parsed from an explicit allow-list (``PARAMETERS``); nothing a user types becomes an ORM
path, and the order of the parsed fields is fixed, so the same request always means the same export.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from labeling.services import splits as splits_service
from labeling.services.errors import ValidationFailed

SCHEMA_VERSION = 1
FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                 "parquet": "application/vnd.apache.parquet"}
AGGREGATIONS = ("majority", "dawid_skene")
GOLD_MODES = ("flag", "exclude")
CSV_CELLS = ("escaped", "raw")
PROPAGATED_MODES = ("include", "exclude")
CSV_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
CSV_CELLS_RULE = (
    "csv_cells=escaped (the default): a cell that begins with =, +, -, @, a tab, a carriage return or an "
    "apostrophe gets one more apostrophe in front (OWASP's advice against CSV formula injection), so a spreadsheet "
    "shows it as text and never runs it; to read the true value, remove one leading apostrophe from any cell that "
    "starts with one. csv_cells=raw writes every cell verbatim: for programs, never for a spreadsheet."
)
"""How CSV cells are written (``csv_cells``); the dataset card and the README carry this text."""
COLUMNS: tuple[str, ...] = (
    "external_id", "text", "content_hash", "meta", "labels", "label_source", "soft_labels", "n_annotators",
    "agreement", "taxonomy_version", "annotation_taxonomy_versions", "n_mapped", "n_unmappable",
    "selection_reason", "inclusion_probability", "model_version", "is_gold", "gold_labels", "split",
    "suspected_error",
)
RAW_COLUMN = "raw"
SUSPECTED_ERROR_DEFINITION = (
    "true while the model confidently disagrees with the row's answer (confident learning over cross-validated "
    "probabilities at retrain) and no re-check has resolved it yet; false otherwise, including after a re-check "
    "kept the answer or a policy lead corrected it. Drop or down-weight these rows to train only on answers "
    "nobody doubts.")
"""What the ``suspected_error`` column means (the dataset card and the README carry this text)."""
PENDING_ADJUDICATION = "P"
"""The adjudication key of an item whose adjudication is pending (never a JSON label list, which starts with '[')."""
AGREEMENT_DEFINITION = ("share of the row's n_annotators answers whose label set, read in the target taxonomy "
                        "version, equals the row's labels exactly; an answer that cannot be read in that version "
                        "counts as not agreeing; null when the row has no settled answer (pending adjudication) "
                        "or no readable answer")
LABEL_SOURCES: dict[str, str] = {
    "majority": "the majority vote of the readable answers",
    "dawid_skene": "the Dawid-Skene posterior's answer",
    "adjudication": "a policy lead's decision, which overrides any aggregate",
    "tie": "no hard label: the top answers tie (labels is empty)",
    "pending_adjudication": ("no hard label yet: the item waits for a policy lead's decision (labels is empty, "
                             "agreement is null, soft_labels still show the votes); drop these rows to train "
                             "only on settled answers"),
    "none": "no answer could be read in the target taxonomy version (labels is empty)",
    "propagated": ("every answer behind the row was propagated from its near-duplicate cluster's representative "
                   "(labeling/services/propagation.py), none given by a human for this item; propagated=exclude "
                   "leaves them out. A propagated answer is read only while its item has no human answer"),
}
"""Every ``label_source`` value and what it means (the dataset card carries this table)."""
RAW_ANSWER_FIELDS: dict[str, str] = {
    "reviewer": "the reviewer's username",
    "labels": "the labels as given, in the version they were given in",
    "mapped_labels": "the same answer mapped onto a later version by a label migration (null if none)",
    "taxonomy_version": "the version number the answer was given in",
    "model_version": "the ranking (model) version that selected the item",
    "created_at": "when the answer was submitted (UTC, ISO 8601)",
    "selection_reason": "why the item was shown to this reviewer",
    "lead_time_ms": "the time the reviewer spent on the item, in milliseconds (null if not reported)",
    "comment": "the reviewer's free-text comment, as typed (may be empty); plain text, never HTML",
}
"""The fields of each answer in the ``raw`` column (``raw=true``); the dataset card carries this table."""
TIE_RULE = ("single-label: a shared top vote share (or posterior) gives no hard label (label_source 'tie'); "
            "multi-label: a label needs strictly more than half (posterior > 0.5); a decided adjudication "
            "always wins")

READ_CHUNK = 5000
FIRST_FETCH = 50
TEXT_BATCH_ROWS = 500
FIRST_BATCH_ROWS = 20
PARQUET_ROW_GROUP = 20_000
DS_MAX_LABELS = 200
ROUND = 6
_SNAPSHOT_NAME_MAX = 100
_ERROR_MAX = 2000
# A running snapshot older than this lost its worker (task time limits are shorter): it may be claimed again.
SNAPSHOT_STALE_AFTER = timedelta(hours=6)

# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class ExportParams:
    """Everything that determines an export's bytes. ``as_dict`` is its canonical, stored form."""

    format: str = "jsonl"
    aggregation: str = "majority"
    split: tuple[float, float, float] | None = None
    seed: int = 0
    raw: bool = False
    gold: str = "flag"
    taxonomy_version: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    reviewers: tuple[str, ...] = ()
    min_agreement: float | None = None
    min_annotators: int | None = None
    labels: tuple[str, ...] = ()
    csv_cells: str = "escaped"
    # Item languages to export (Item.language codes; "und" for items whose language could not be told); empty: all.
    languages: tuple[str, ...] = ()
    propagated: str = "include"

    @property
    def filters_annotations(self) -> bool:
        return bool(self.taxonomy_version is not None or self.since or self.until or self.reviewers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "aggregation": self.aggregation,
            "split": list(self.split) if self.split else None, "seed": self.seed, "raw": self.raw,
            "gold": self.gold, "taxonomy_version": self.taxonomy_version,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "reviewers": list(self.reviewers), "min_agreement": self.min_agreement,
            "min_annotators": self.min_annotators, "labels": list(self.labels),
            # Only where it changes bytes, so the stored parameters of JSON Lines and Parquet exports keep the
            # form they had before the option existed.
            **({"csv_cells": self.csv_cells} if self.format == "csv" else {}),
            **({"languages": list(self.languages)} if self.languages else {}),
            **({"propagated": self.propagated} if self.propagated != "include" else {}),
        }

    @property
    def language_codes(self) -> list[str]:
        """``languages`` as Item.language stores them (undetermined and undetected both read as "")."""
        return ["" if code == "und" else code for code in self.languages]


def _one(name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise ValidationFailed(f"{name}: give one value", field=name)
        return value[0]
    return value


def _as_choice(choices: Sequence[str]) -> Any:
    def parse(name: str, value: Any) -> str:
        text = str(_one(name, value)).strip().lower()
        if text not in choices:
            raise ValidationFailed(f"{name}: {text!r} is not one of {', '.join(choices)}", field=name)
        return text
    return parse


def _as_int(name: str, value: Any) -> int:
    value = _one(name, value)
    if isinstance(value, bool):
        raise ValidationFailed(f"{name}: must be an integer", field=name)
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {value!r} is not an integer", field=name) from exc


def _as_float(name: str, value: Any) -> float:
    value = _one(name, value)
    try:
        number = float(str(value).strip())
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {value!r} is not a number", field=name) from exc
    if not np.isfinite(number):
        raise ValidationFailed(f"{name}: must be a finite number", field=name)
    return number


def _as_bool(name: str, value: Any) -> bool:
    value = _one(name, value)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValidationFailed(f"{name}: {value!r} is not true or false", field=name)


def _as_list(name: str, value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for v in values:
        if not isinstance(v, str | int):
            raise ValidationFailed(f"{name}: must be a string or a list of strings", field=name)
        out.extend(part.strip() for part in str(v).split(",") if part.strip())
    # Sorted and unique: the same filter in another order is the same export.
    return tuple(sorted(set(out)))


def _as_moment(name: str, value: Any, *, end: bool) -> datetime:
    """ISO date or datetime. A date means the whole day (``until`` a date includes that day); naive = UTC."""
    text = str(_one(name, value)).strip()
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text) if len(text) == 10 else None
        if day is None:
            raise ValidationFailed(f"{name}: {text!r} is not an ISO date or datetime", field=name)
        moment = datetime.combine(day + timedelta(days=1) if end else day, time.min)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# The allow-list: every parameter an export accepts, and how it is read. Nothing else gets through.
PARAMETERS: dict[str, Any] = {
    "format": _as_choice(FORMATS),
    "aggregation": _as_choice(AGGREGATIONS),
    "split": lambda name, v: splits_service.split_fractions_parse(_one(name, v)),
    "seed": _as_int,
    "raw": _as_bool,
    "gold": _as_choice(GOLD_MODES),
    "taxonomy_version": _as_int,
    "since": lambda name, v: _as_moment(name, v, end=False),
    "until": lambda name, v: _as_moment(name, v, end=True),
    "reviewer": _as_list,
    "min_agreement": _as_float,
    "min_annotators": _as_int,
    "label": _as_list,
    "csv_cells": _as_choice(CSV_CELLS),
    "language": lambda name, v: tuple(sorted({code.lower() for code in _as_list(name, v)})),
    "propagated": _as_choice(PROPAGATED_MODES),
}
_FIELD_OF = {"reviewer": "reviewers", "label": "labels", "language": "languages"}


def export_params_parse(data: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> ExportParams:
    """Read export parameters from query strings, JSON or command options; unknown names are a 400."""
    unknown = sorted(k for k in data if k not in PARAMETERS and k not in ignore)
    if unknown:
        raise ValidationFailed(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(PARAMETERS)}",
                               field=unknown[0])
    values: dict[str, Any] = {}
    for name, parse in PARAMETERS.items():
        raw = data.get(name)
        if raw is None or raw == "" or raw == []:
            continue
        values[_FIELD_OF.get(name, name)] = parse(name, raw)
    params = ExportParams(**values)
    if params.min_agreement is not None and not 0.0 <= params.min_agreement <= 1.0:
        raise ValidationFailed("min_agreement: must be between 0 and 1", field="min_agreement")
    if params.min_annotators is not None and params.min_annotators < 0:
        raise ValidationFailed("min_annotators: must be 0 or more", field="min_annotators")
    bad = [code for code in params.languages if not re.fullmatch(r"[a-z]{2,3}", code)]
    if bad:
        raise ValidationFailed(f"language: {', '.join(map(repr, bad))} is not a language code (ISO 639, as the "
                               "language list shows them; und for undetermined)", field="language")
    if params.since and params.until and params.since >= params.until:
        raise ValidationFailed("since: must be before until", field="since")
    return params
