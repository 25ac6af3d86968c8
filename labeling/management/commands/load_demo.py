"""``load_demo``: the demo project "sms-demo", its five users and a sample of the SMS Spam Collection.

Safe to run any number of times: it creates what is missing and re-imports the sample, which
is idempotent (a second run reports every item unchanged and changes no item).

Passwords: ``$SIFT_DEMO_PASSWORD`` when set (applied to all five users on every run). Otherwise
a random password is generated once, saved to ``<SIFT_DATA_DIR>/demo_password`` (mode 0600)
and printed once, when it is created; later runs reuse it and print only where it is kept.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling.models import Membership, Project, Role
from labeling.services.items_import import items_import
from labeling.services.projects import membership_add, project_create

DEMO_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
PROJECT_SLUG = "sms-demo"
USERS: tuple[tuple[str, str], ...] = (
    ("admin", Role.ADMIN),
    ("lead", Role.POLICY_LEAD),
    ("reviewer1", Role.REVIEWER),
    ("reviewer2", Role.REVIEWER),
    ("engineer", Role.ML_ENGINEER),
)
# The policy lead's seeds for the cold start: what spam on this channel looks like.
SEED_QUERIES = [
    "WINNER! You have been selected for a cash prize, call now to claim",
    "Free entry in our weekly competition, text WIN to 80086",
    "URGENT: your mobile number has won a bonus, call 0906 premium line",
    "Reply STOP to unsubscribe from ringtone and dating offers",
]


def demo_password_path() -> Path:
    return Path(settings.DATA_DIR) / "demo_password"


class Command(BaseCommand):
    help = "Create (or refresh) the demo project, its users and its sample items. Idempotent."

    def handle(self, *args: Any, **options: Any) -> None:
        password, source = self._password()
        project = self._project()
        self._users(project, password, source)
        pool = self._import(project, "sms_items.jsonl.gz", gold=False)
        gold = self._import(project, "sms_gold.jsonl.gz", gold=True)
        self.stdout.write(
            f"Demo project {project.slug!r}: pool {pool['created']} created, {pool['unchanged']} unchanged, "
            f"{pool['updated']} updated; gold {gold['created']} created, {gold['unchanged']} unchanged, "
            f"{gold['updated']} updated."
        )
        self.stdout.write("Users: " + ", ".join(f"{name} ({role})" for name, role in USERS))
        if source == "generated":
            self.stdout.write(self.style.WARNING(
                f"Demo password for all five users (shown once; kept in {demo_password_path()}): {password}"))
        elif source == "file":
            self.stdout.write(f"Password: the one in {demo_password_path()}")
        else:
            self.stdout.write("Password: $SIFT_DEMO_PASSWORD")

    def _password(self) -> tuple[str, str]:
        """The demo password and where it came from: "env", "file" or "generated" (just now)."""
        configured = os.environ.get("SIFT_DEMO_PASSWORD", "")
        if configured:
            return configured, "env"
        path = demo_password_path()
        if path.exists():
            return path.read_text(encoding="utf-8").strip(), "file"
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL + 0600 at creation: the secret is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        return password, "generated"

    def _project(self) -> Project:
        project: Project | None = Project.objects.filter(slug=PROJECT_SLUG).first()
        if project is not None:
            return project
        taxonomy = json.loads((DEMO_DIR / "taxonomy.json").read_text(encoding="utf-8"))
        return project_create(
            actor=None, slug=PROJECT_SLUG, name="SMS spam (demo)", taxonomy=taxonomy, overlap=2,
            strategy="default", seed_queries=SEED_QUERIES, gold_rate=0.05,
            description="A sample of the SMS Spam Collection (Almeida & Gómez Hidalgo, CC BY 4.0). "
                        "Each message needs two reviewers.",
        )

    def _users(self, project: Project, password: str, source: str) -> None:
        user_model = get_user_model()
        for username, role in USERS:
            with transaction.atomic():
                user, created = user_model.objects.get_or_create(username=username)
                changed: list[str] = []
                # A stored password the user may have changed is left alone; a new user, a new
                # generated password or $SIFT_DEMO_PASSWORD is applied.
                if created or source == "generated" or (source == "env" and not user.check_password(password)):
                    user.set_password(password)
                    changed.append("password")
                if username == "admin" and not (user.is_superuser and user.is_staff):
                    user.is_superuser = user.is_staff = True
                    changed += ["is_superuser", "is_staff"]
                if changed:
                    user.save(update_fields=None if created else changed)
            current = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
            if current != role:
                membership_add(actor=None, project=project, username=username, role=role)

    def _import(self, project: Project, name: str, *, gold: bool) -> dict[str, Any]:
        with (DEMO_DIR / name).open("rb") as handle:
            summary = items_import(actor=None, project=project, source=handle, filename=name, gold=gold)
        if not summary.ok:
            raise CommandError(f"{name}: the demo sample did not import cleanly: {summary.as_dict()['errors'][:3]}")
        return summary.as_dict()
