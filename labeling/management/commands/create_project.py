"""``create_project --slug S --name N --taxonomy FILE [--overlap K] [--strategy NAME]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.services.errors import ServiceError
from labeling.services.projects import KNOWN_STRATEGIES, project_create


class Command(BaseCommand):
    help = "Create a project with its first published taxonomy version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--taxonomy", required=True, help="Taxonomy JSON file (CONTRACT.md, 'Files').")
        parser.add_argument("--overlap", type=int, default=1, help="Distinct reviewers each item needs (1-20).")
        # No argparse choices: the service validates (one home for the rule) and names the choices itself.
        parser.add_argument("--strategy", default="default", help=f"One of: {', '.join(KNOWN_STRATEGIES)}.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["taxonomy"])
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"{path}: cannot read the taxonomy ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
        try:
            project = project_create(actor=None, slug=options["slug"], name=options["name"], taxonomy=document,
                                     overlap=options["overlap"], strategy=options["strategy"])
        except ServiceError as exc:
            raise CommandError(f"{path}: {exc.message}" if "path" in exc.extra else exc.message) from exc
        version = project.current_taxonomy_version
        self.stdout.write(
            f"Created project {project.slug!r} (taxonomy v{version.number if version else '?'}, "
            f"overlap {project.overlap}, strategy {project.strategy})."
        )
