"""``export --project S --format jsonl|csv|parquet --out PATH [--split 0.8,0.1,0.1] [--seed N]
[--aggregation majority|dawid_skene]`` (CONTRACT.md), plus the filters and options of the API.

Writes PATH atomically (a failed export leaves the old file, or nothing), prints a JSON summary
(rows, bytes, sha256), and with ``--card`` writes PATH.card.json and PATH.card.md beside it.
``--snapshot NAME`` saves the export as a named, immutable snapshot under EXPORT_ROOT instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.errors import ServiceError
from labeling.services.exports import (
    AGGREGATIONS,
    FORMATS,
    GOLD_MODES,
    export_card_markdown,
    export_params_parse,
    export_snapshot_create,
    export_write_file,
)


class Command(BaseCommand):
    help = "Export a project's labels as a training set (one row per item) in JSON Lines, CSV or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--out", help="Output file (required unless --snapshot).")
        parser.add_argument("--split", help="train,validation,test fractions, e.g. 0.8,0.1,0.1. Items keep a "
                                            "split once assigned.")
        parser.add_argument("--seed", type=int, help="Seed for the split order (default 0).")
        parser.add_argument("--aggregation", choices=AGGREGATIONS, help="Default: majority.")
        parser.add_argument("--raw", action="store_true", help="Add each annotator's raw answers.")
        parser.add_argument("--gold", choices=GOLD_MODES, help="Flag gold items (default) or exclude them.")
        parser.add_argument("--taxonomy-version", type=int, help="Only answers given under this version; "
                                                                 "labels in its terms.")
        parser.add_argument("--since", help="Answers created at or after (ISO date or datetime, UTC if naive).")
        parser.add_argument("--until", help="Answers created before (a date includes that day).")
        parser.add_argument("--reviewer", action="append", help="Only this reviewer's answers (repeatable).")
        parser.add_argument("--min-agreement", type=float)
        parser.add_argument("--min-annotators", type=int)
        parser.add_argument("--label", action="append", help="Only items whose labels include this key "
                                                             "(repeatable: any of them).")
        parser.add_argument("--language", action="append", help="Only items in this language (ISO 639 code as the "
                                                                "language list shows it; und: undetermined; "
                                                                "repeatable or comma-separated).")
        parser.add_argument("--csv-raw-cells", action="store_true",
                            help="CSV only: write cells verbatim. By default a cell starting with =, +, -, @, tab, "
                                 "carriage return or ' gets a leading ' (no formulas when opened in a "
                                 "spreadsheet); this is for programs.")
        parser.add_argument("--exclude-propagated", action="store_true",
                            help="Leave out answers propagated from a near-duplicate cluster's representative "
                                 "(rows with label_source 'propagated' and propagated votes on other rows).")
        parser.add_argument("--card", action="store_true", help="Also write PATH.card.json and PATH.card.md.")
        parser.add_argument("--snapshot", metavar="NAME", help="Save as the named snapshot instead of --out.")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        if not options["out"] and not options["snapshot"]:
            raise CommandError("give --out PATH or --snapshot NAME")
        raw_params = {
            "format": options["format"], "split": options["split"], "seed": options["seed"],
            "aggregation": options["aggregation"], "raw": options["raw"] or None, "gold": options["gold"],
            "taxonomy_version": options["taxonomy_version"], "since": options["since"], "until": options["until"],
            "reviewer": options["reviewer"], "min_agreement": options["min_agreement"],
            "min_annotators": options["min_annotators"], "label": options["label"], "language": options["language"],
            "csv_cells": "raw" if options["csv_raw_cells"] else None,
            "propagated": "exclude" if options["exclude_propagated"] else None,
        }
        try:
            params = export_params_parse({k: v for k, v in raw_params.items() if v is not None})
            if options["snapshot"]:
                snapshot = export_snapshot_create(project=project, actor=None, name=options["snapshot"],
                                                  params=params)
                summary: dict[str, Any] = {"snapshot": snapshot.name, "rows": snapshot.row_count,
                                           "bytes": snapshot.size_bytes, "sha256": snapshot.sha256,
                                           "path": snapshot.path}
                card = snapshot.card
                out = Path(options["out"]) if options["out"] else None
            else:
                out = Path(options["out"])
                if not out.parent.is_dir():
                    raise CommandError(f"{out.parent}: no such directory")
                result = export_write_file(project=project, params=params, actor=None, path=out)
                summary = {"path": str(result.path), "rows": result.rows, "bytes": result.size_bytes,
                           "sha256": result.sha256}
                card = result.card
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if options["card"] and out is not None:
            Path(f"{out}.card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
            Path(f"{out}.card.md").write_text(export_card_markdown(card))
        self.stdout.write(json.dumps(summary, indent=2))
