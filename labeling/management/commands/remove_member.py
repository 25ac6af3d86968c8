"""``remove_member --project S --username U``: end a membership and revoke the user's API tokens."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.errors import ServiceError
from labeling.services.projects import membership_remove


class Command(BaseCommand):
    help = "Remove a user from a project; their API tokens are revoked (they log in again for a new one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--username", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        try:
            membership_remove(actor=None, project=project, username=options["username"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{options['username']} is no longer a member of {project.slug}; API tokens revoked.")
