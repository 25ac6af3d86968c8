"""``python manage.py detect_languages --project S``: fill in the language of items stored before detection existed.

Prints the project's language mix afterwards (as ``GET /api/projects/{slug}/languages/``), with the embedder
it calls for.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.languages import items_detect_languages, project_language_mix


class Command(BaseCommand):
    help = "Detect the language of a project's items that have none yet, and print the project's language mix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project {options['project']!r}") from None
        filled = items_detect_languages(project=project)
        self.stdout.write(json.dumps({"detected": filled, **project_language_mix(project=project)},
                                     ensure_ascii=False))
