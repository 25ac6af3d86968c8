"""``import_items --project S FILE [--gold] [--atomic]``: import items from JSON Lines or CSV (maybe .gz), or Parquet.

Prints the JSON summary on stdout; exits 0 with no errors and 1 with any (CONTRACT.md).
``FILE`` may be ``-`` for standard input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.errors import ServiceError
from labeling.services.images import items_import_zip, upload_is_zip
from labeling.services.items_import import items_import


class Command(BaseCommand):
    help = "Import items (JSON Lines or CSV, optionally gzipped, or Parquet) into a project; prints a JSON summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("file", help="A .jsonl/.csv file (optionally .gz), a .parquet file, or a .zip of "
                                           "images beside one .jsonl file; '-' reads standard input.")
        parser.add_argument("--gold", action="store_true",
                            help="Rows are gold items: each row's 'label' is the expected answer.")
        parser.add_argument("--atomic", action="store_true", help="Import nothing if any row is bad.")
        parser.add_argument("--format", choices=["jsonl", "csv", "parquet"], default=None,
                            help="Override format detection (by extension, else by content).")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        path = options["file"]
        import_args: dict[str, Any] = {"actor": None, "project": project, "file_format": options["format"],
                                       "gold": options["gold"], "atomic": options["atomic"]}
        if path == "-":
            summary = items_import(source=sys.stdin.buffer, filename="<stdin>", **import_args)
        else:
            file_path = Path(path)
            if not file_path.is_file():
                raise CommandError(f"{path}: no such file")
            with file_path.open("rb") as handle:
                if upload_is_zip(handle):  # images beside a JSON Lines file
                    try:
                        summary = items_import_zip(source=handle, actor=None, project=project, gold=options["gold"],
                                                   atomic=options["atomic"])
                    except ServiceError as exc:
                        raise CommandError(str(exc)) from None
                else:
                    summary = items_import(source=handle, filename=file_path.name, **import_args)
        self.stdout.write(json.dumps(summary.report(), indent=2, ensure_ascii=False))
        if not summary.ok:
            what = "nothing was imported (--atomic)" if options["atomic"] else "the valid rows were imported"
            raise CommandError(f"{summary.error_count:,} row(s) had errors; {what}", returncode=1)
