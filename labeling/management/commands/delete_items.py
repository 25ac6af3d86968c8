"""``delete_items --project S --reason WHY (--external-id ID ... | --file PATH)``: hard deletion on request.

Deletes the items, their annotations, cached vectors and the project's snapshots that may contain them, and
writes an audit tombstone (labeling/services/privacy.py). Prints a JSON summary; exit status 1 when any id
was not found (nothing else is wrong: the others were deleted, and repeating the command is safe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.errors import ServiceError
from labeling.services.privacy import items_delete


class Command(BaseCommand):
    help = "Hard-delete items of a project by external id, leaving an audit tombstone."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--external-id", action="append", default=[], dest="external_ids",
                            help="An external id to delete (repeatable).")
        parser.add_argument("--file", type=Path, default=None,
                            help="A text file with one external id per line (blank lines are ignored).")
        parser.add_argument("--reason", required=True, help="Why: kept in the audit tombstone.")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        external_ids = list(options["external_ids"])
        if options["file"] is not None:
            try:
                lines = options["file"].read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read {options['file']}: {exc}") from exc
            external_ids += [line.strip() for line in lines if line.strip()]
        if not external_ids:
            raise CommandError("name the items: --external-id ID (repeatable) or --file PATH")
        try:
            result = items_delete(actor=None, project=project, external_ids=external_ids, reason=options["reason"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result.as_dict()))
        if result.not_found:
            raise SystemExit(1)
