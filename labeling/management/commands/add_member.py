"""``add_member --project S --username U --role ROLE [--password P]``: creates the user if missing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project, Role
from labeling.services.errors import ServiceError
from labeling.services.projects import membership_add


class Command(BaseCommand):
    help = "Give a user one role in a project, creating the user if needed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", default=None,
                            help="Set this password (checked by the password validators). A new user without "
                                 "one cannot log in until a password is set.")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        username = options["username"]
        existed = get_user_model().objects.filter(username=username).exists()
        try:
            membership_add(actor=None, project=project, username=username, role=options["role"],
                           password=options["password"], create_user=True)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        created = "" if existed else " (new user" + ("" if options["password"] else ", no password set") + ")"
        self.stdout.write(f"{username} is {options['role']} in {project.slug}{created}.")
