"""The export's entry points: ``export_prepare``, the streamed bytes (``export_stream``) and the dataset card.

The stream runs inside the read transaction, judges a batch at a time and hands it to the format's writer;
the card's figures are complete once the stream is exhausted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.utils import timezone

from labeling.models import Project
from labeling.services import splits as splits_service
from labeling.services.audit import Actor, audit_record
from labeling.services.exports.judge import _assign_splits, _judged, _tally
from labeling.services.exports.params import (
    AGREEMENT_DEFINITION,
    CSV_CELLS_RULE,
    LABEL_SOURCES,
    PARQUET_ROW_GROUP,
    RAW_ANSWER_FIELDS,
    ROUND,
    SCHEMA_VERSION,
    SUSPECTED_ERROR_DEFINITION,
    TIE_RULE,
    ExportParams,
)
from labeling.services.exports.read import _G_ID, PreparedExport, _bind, _iso, _read_transaction, read_suspected
from labeling.services.exports.writers import _WRITERS, _regroup


def export_prepare(*, project: Project, params: ExportParams, actor: Actor, audit: bool = True) -> PreparedExport:
    """Validate ``params`` against the project and assign splits if asked; nothing is streamed yet.

    Raises ValidationFailed (400) for an unknown taxonomy version, label or reviewer. With ``split``,
    newly exported items get their split here, in a short locked transaction (splits.py).
    """
    prepared = _bind(project=project, params=params)
    if params.split is not None:
        prepared.split_assignment = _assign_splits(prepared, actor=actor)
    if audit:
        audit_record(actor=actor, action="export.run", obj=project, project=project, data=params.as_dict())
    return prepared



def export_stream(prepared: PreparedExport) -> Iterator[bytes]:
    """The export's bytes, in chunks; the card figures are complete once it is exhausted.

    Text formats send each batch as it is read (the first is ``FIRST_FETCH`` items, so a download
    starts at once); Parquet writes row groups of ``PARQUET_ROW_GROUP`` rows.
    """
    if prepared.finished:
        raise RuntimeError("a prepared export streams once")
    with _read_transaction():
        read_suspected(prepared)
        writer = _WRITERS[prepared.params.format](prepared)
        head = writer.begin()
        if head:
            yield head
        batches = _judged(prepared, light=False)
        if prepared.params.format == "parquet":
            batches = _regroup(batches, PARQUET_ROW_GROUP)
        for batch in batches:
            _tally(prepared.stats, batch)
            if prepared.suspected:
                prepared.stats.suspected += sum(1 for row in batch.rows if row[_G_ID] in prepared.suspected)
            yield writer.write(batch)
        tail = writer.finish()
        if tail:
            yield tail
    prepared.finished = True


# --------------------------------------------------------------------------- cards

def export_card(prepared: PreparedExport, *, sha256: str | None = None, size_bytes: int | None = None,
                name: str | None = None) -> dict[str, Any]:
    """The dataset card as JSON-ready data (render it with ``export_card_markdown``)."""
    if not prepared.finished:
        raise RuntimeError("the card needs the export to have been streamed to the end")
    stats = prepared.stats
    distribution = {key: stats.labels[key] for key in prepared.keys if stats.labels[key]}
    if stats.labels["(no label)"]:
        distribution["(no label)"] = stats.labels["(no label)"]
    card: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "project": prepared.project.slug,
        "name": name,
        "format": prepared.params.format,
        "rows": stats.rows,
        "annotations": stats.annotations,
        "gold_rows": stats.gold_rows,
        "label_distribution": distribution,
        "label_sources": dict(sorted(stats.sources.items())),
        "label_source_definitions": LABEL_SOURCES,
        "agreement": {
            "definition": AGREEMENT_DEFINITION,
            "mean": round(stats.agreement_sum / stats.agreement_rows, ROUND) if stats.agreement_rows else None,
            "full_agreement_share": (round(stats.full_agreement / stats.agreement_rows, ROUND)
                                     if stats.agreement_rows else None),
            "rows_with_agreement": stats.agreement_rows,
        },
        "taxonomy_version": prepared.target_version_number,
        "multi_label": prepared.multi_label,
        "labels": prepared.keys,
        "annotation_taxonomy_versions": {str(v): n for v, n in sorted(stats.versions.items())},
        "annotations_mapped": stats.mapped,
        "suspected_errors": {"rows": stats.suspected, "definition": SUSPECTED_ERROR_DEFINITION},
        "annotations_unmappable": stats.unmappable,
        "date_range": {"first_annotation": _iso(stats.first) if stats.first else None,
                       "last_annotation": _iso(stats.last) if stats.last else None},
        "splits": {name: stats.splits[name] for name in (*splits_service.SPLIT_NAMES, "unassigned")
                   if stats.splits[name]},
        "splits_newly_assigned": prepared.split_assignment,
        "aggregation": {"method": prepared.params.aggregation, "tie_rule": TIE_RULE,
                        **({"dawid_skene": prepared.ds_info} if prepared.ds_info else {})},
        "params": prepared.params.as_dict(),
        "columns": list(prepared.columns),
        **({"csv_cells": CSV_CELLS_RULE} if prepared.params.format == "csv" else {}),
        **({"raw_answer_fields": RAW_ANSWER_FIELDS} if prepared.params.raw else {}),
        "sha256": sha256,
        "size_bytes": size_bytes,
        "generated_at": _iso(timezone.now()),
    }
    return card


def export_card_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown (plain text: every value is escaped of Markdown table syntax)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    title = f"{card.get('project')}" + (f" / {card['name']}" if card.get("name") else "")
    agreement = card.get("agreement") or {}
    lines = [
        f"# Dataset card: {cell(title)}", "",
        f"- Rows (items): {card.get('rows')}",
        f"- Annotations: {card.get('annotations')}",
        f"- Gold rows: {card.get('gold_rows')}",
        f"- Format: {card.get('format')}",
        f"- Taxonomy version: {card.get('taxonomy_version')}"
        f" (answers given under: {cell(card.get('annotation_taxonomy_versions'))};"
        f" mapped {card.get('annotations_mapped')}, unreadable {card.get('annotations_unmappable')})",
        f"- Annotations dated: {(card.get('date_range') or {}).get('first_annotation')} to "
        f"{(card.get('date_range') or {}).get('last_annotation')}",
        f"- Aggregation: {cell((card.get('aggregation') or {}).get('method'))}",
        f"- Ties: {cell((card.get('aggregation') or {}).get('tie_rule'))}",
        f"- Agreement: mean {agreement.get('mean')}, full agreement on {agreement.get('full_agreement_share')}"
        f" of {agreement.get('rows_with_agreement')} rows ({cell(agreement.get('definition'))})",
    ]
    suspected = card.get("suspected_errors") or {}
    if suspected:
        lines.append(f"- Suspected label errors: {suspected.get('rows')} rows flagged suspected_error "
                     f"({cell(suspected.get('definition'))})")
    if card.get("csv_cells"):
        lines.append(f"- CSV cells: {cell(card['csv_cells'])}")
    if card.get("sha256"):
        lines.append(f"- SHA-256: `{card['sha256']}` ({card.get('size_bytes')} bytes)")
    lines += ["", "## Label distribution", "", "| label | rows |", "| --- | ---: |"]
    lines += [f"| {cell(k)} | {v} |" for k, v in (card.get("label_distribution") or {}).items()]
    definitions = card.get("label_source_definitions") or {}
    lines += ["", "## Label sources", "", "| source | rows | meaning |", "| --- | ---: | --- |"]
    lines += [f"| {cell(k)} | {v} | {cell(definitions.get(k, ''))} |"
              for k, v in (card.get("label_sources") or {}).items()]
    if card.get("raw_answer_fields"):
        lines += ["", "## Raw answers (`raw` column)", "", "| field | meaning |", "| --- | --- |"]
        lines += [f"| {cell(k)} | {cell(v)} |" for k, v in card["raw_answer_fields"].items()]
    if card.get("splits"):
        lines += ["", "## Splits", "", "| split | rows |", "| --- | ---: |"]
        lines += [f"| {cell(k)} | {v} |" for k, v in card["splits"].items()]
    lines += ["", "## Export parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| {cell(k)} | {cell(json.dumps(v))} |" for k, v in (card.get("params") or {}).items()]
    lines += ["", f"Generated at {card.get('generated_at')}.", ""]
    return "\n".join(lines)
