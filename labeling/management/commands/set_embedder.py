"""``python manage.py set_embedder --project S --embedder minilm|static|multilingual|hashing``.

Switches the project's embedding tier; the worker then embeds every item the new tier has no vector for (README,
"Embedding tiers", gives the cost), and the next model trains on the new vectors. Audited like any setting.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.languages import project_set_embedder
from learning.core.vocabulary import EMBEDDER_NAMES


class Command(BaseCommand):
    help = "Switch a project's embedder (its items are re-embedded by the worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--embedder", required=True, choices=EMBEDDER_NAMES)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project {options['project']!r}") from None
        changed = project_set_embedder(actor=None, project=project, embedder=options["embedder"])
        self.stdout.write(f"{project.slug}: embedder {options['embedder']}" + ("" if changed else " (unchanged)"))
