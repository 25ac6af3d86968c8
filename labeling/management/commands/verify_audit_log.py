"""``verify_audit_log [--project S]``: check the audit log's hash chains (labeling/models/audit.py).

Prints a JSON report: rows and chains checked, each broken chain's first bad row, and every chain's head hash
(keep those somewhere else: a chain rewritten from some row to its end is only caught against a copy of the
head). Exit status 0 when every chain is intact, 1 otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import Project
from labeling.services.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chains and report the first broken row of each."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", default=None, help="Only this project's chains (one per actor).")

    def handle(self, *args: Any, **options: Any) -> None:
        project = None
        if options["project"] is not None:
            project = Project.objects.filter(slug=options["project"]).first()
            if project is None:
                raise CommandError(f"no project with slug {options['project']!r}")
        report = audit_verify(project=project)
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.ok:
            raise SystemExit(1)
