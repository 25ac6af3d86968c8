"""``load_demo``: the demo project "sms-demo", its five users and a sample of the SMS Spam Collection.

``make demo`` runs this on every start, so it must succeed whatever happened in the demo since the last
start (a taxonomy publish, labels, deleted items, changed passwords or roles, deleted users) and must not
undo any of it. The rule: it creates what is missing and leaves alone everything that exists.

- The project is created once; its settings, taxonomy versions and items are the users' from then on.
- Sample rows are imported only where the project has no item with that external id, and never where an
  admin hard-deleted one (the ``items.delete`` tombstones keep a digest of each external id). Existing
  items (their text, meta, gold answers, annotations) are never rewritten, so a gold answer that a later
  taxonomy no longer knows cannot make a restart fail. A missing row that does not validate any more
  (a gold answer under a renamed label) is reported and left out, never fatal.
- A missing demo user is created (with the demo password and its demo role). An existing user keeps its
  password, role, membership and flags, and what differs from the demo's set-up is printed. The demo
  password is applied to every demo user only when it is new: generated just now, or a
  ``$SIFT_DEMO_PASSWORD`` different from the one applied last (a salted hash of it is kept in
  ``<SIFT_DATA_DIR>/demo_password_applied``, with the database it was applied in). ``--reset-users`` puts
  the five users back as the demo made them (password, role, membership, active, admin flags).

Vectors: the sample's all-MiniLM-L6-v2 vectors ship precomputed (``sms_vectors.npz``, built by
``fixtures/demo/build_vectors.py`` with the worker's own embedder) and go into the vector cache for the items
the project has, so the worker finds them embedded and trains the first model within seconds of starting
rather than spending minutes embedding 1,530 texts. The embeddings stay real MiniLM ones (a test compares them
with the live model); a project switched to another embedder tier is left to the worker.

Passwords: ``$SIFT_DEMO_PASSWORD`` when set. Otherwise a random password is generated once, saved to
``<SIFT_DATA_DIR>/demo_password`` (mode 0600) and printed once, when it is created; later runs reuse it and
print only where it is kept.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, transaction

from labeling.models import AuditEvent, Item, Membership, Project, Role
from labeling.services.errors import ServiceError
from labeling.services.items_import import items_import
from labeling.services.privacy import external_id_digest
from labeling.services.projects import membership_add, project_create
from learning import scheduling

DEMO_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
PROJECT_SLUG = "sms-demo"
VECTORS_FILE = "sms_vectors.npz"
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


def demo_password_applied_path() -> Path:
    """A salted hash of the password load_demo last gave the demo users (never the password itself)."""
    return Path(settings.DATA_DIR) / "demo_password_applied"


def _database() -> str:
    """Which database the users live in: the marker speaks only for that one (a test run or another
    DATABASE_URL sharing the data directory must not pass for the demo's)."""
    db = connection.settings_dict
    return f"{connection.vendor}:{db.get('HOST') or ''}:{db.get('PORT') or ''}:{db['NAME']}"


def _applied_hash() -> str | None:
    """The hash in the marker, if the marker exists and was written for this database."""
    try:
        marker = json.loads(demo_password_applied_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("database") != _database():
        return None
    encoded = marker.get("password")
    return encoded if isinstance(encoded, str) else None


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    partial.replace(path)


@dataclass
class SampleResult:
    """One fixture file's outcome: rows imported now, rows already present, rows left out and why."""

    created: int = 0
    present: int = 0
    deleted: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def describe(self, name: str) -> str:
        text = f"{name} {self.created} created, {self.present} already present"
        if self.deleted:
            text += f", {self.deleted} deleted in the demo (left deleted)"
        if self.rejected:
            text += f", {self.rejected} not valid any more (left out)"
        return text


class Command(BaseCommand):
    help = ("Create the demo project, its five users and its sample items where they are missing. Idempotent: "
            "what users did in the demo is kept.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-vectors", action="store_true",
            help="Do not store the sample's precomputed MiniLM vectors: the worker embeds the items, as it would a "
                 "real project's (bench/demo_startup.py measures the difference).")
        parser.add_argument(
            "--reset-users", action="store_true",
            help="Put the five demo users back as the demo made them: the demo password, their demo role and "
                 "membership, active, and admin's superuser flags. Items, labels and the taxonomy are untouched.")

    def handle(self, *args: Any, **options: Any) -> None:
        reset: bool = options["reset_users"]
        self._hash_for, self._checked = None, {}
        password, source = self._password()
        project, project_created = self._project()
        notes = self._users(project, password, source=source, project_created=project_created, reset=reset)
        pool = self._import(project, "sms_items.jsonl.gz", gold=False)
        gold = self._import(project, "sms_gold.jsonl.gz", gold=True)
        # The sample's MiniLM vectors, precomputed (fixtures/demo/build_vectors.py): the worker finds the items
        # embedded and trains the first model at once. Vectors already cached, or of another embedder, are skipped.
        if not options.get("no_vectors"):
            scheduling.preload_vectors(project_id=project.pk, path=DEMO_DIR / VECTORS_FILE)
        # -v 0 (make demo, whose banner names the users and where the password is) prints only what needs
        # attention: rows left out, users changed in the demo, and a newly generated password (shown once).
        verbose = int(options.get("verbosity", 1)) >= 1
        state = "created" if project_created else "already there, kept as it is"
        if verbose:
            self.stdout.write(f"Demo project {project.slug!r} ({state}): {pool.describe('pool')}; "
                              f"{gold.describe('gold')}.")
        for problem in pool.problems + gold.problems:
            self.stdout.write(self.style.WARNING(f"  left out: {problem}"))
        if verbose:
            self.stdout.write("Users: " + ", ".join(f"{name} ({role})" for name, role in USERS))
        for note in notes:
            self.stdout.write(self.style.WARNING(f"  {note}"))
        if notes:
            self.stdout.write("  (kept as changed in the demo; `manage.py load_demo --reset-users` restores them)")
        if source == "generated":
            self.stdout.write(self.style.WARNING(
                f"Demo password for all five users (shown once; kept in {demo_password_path()}): {password}"))
        elif not verbose:
            pass
        elif source == "file":
            self.stdout.write(f"Password: the one in {demo_password_path()}")
        else:
            self.stdout.write("Password: $SIFT_DEMO_PASSWORD")

    # --- Password --------------------------------------------------------------------------------------

    def _password(self) -> tuple[str, str]:
        """The demo password and where it came from: "env", "file" or "generated" (just now)."""
        configured = os.environ.get("SIFT_DEMO_PASSWORD", "")
        if configured:
            return configured, "env"
        path = demo_password_path()
        if path.exists():
            kept = path.read_text(encoding="utf-8").strip()
            if kept:
                return kept, "file"
            # An empty file (a full disk, a hand edit) holds no password anyone knows: make a new one.
        password = secrets.token_urlsafe(12)
        _write_private(path, password)
        return password, "generated"

    def _password_is_new(self, password: str, source: str) -> bool:
        """Whether ``password`` differs from the one load_demo last gave the demo users."""
        if source == "generated":
            return True
        encoded = _applied_hash()
        if encoded is None:
            # Before this marker existed a kept password file was applied only when generated, and
            # $SIFT_DEMO_PASSWORD on every run: treat them so once, then the marker decides.
            return source == "env"
        return not self._matches(password, encoded)

    # A password hash costs about 0.4 s of CPU (PBKDF2), and a start used to compute six of them. The five demo
    # users share one password, so they share one encoded hash (one salt), and the marker keeps the same string:
    # a start computes one hash, and a restart checks one (the answers are remembered per encoded string).
    _hash_for: tuple[str, str] | None
    _checked: dict[tuple[str, str], bool]

    def _encoded(self, password: str) -> str:
        if self._hash_for is None or self._hash_for[0] != password:
            self._hash_for = (password, make_password(password))
        return self._hash_for[1]

    def _matches(self, password: str, encoded: str) -> bool:
        """hashers.check_password, not user.check_password (that one may re-save the hash), remembered."""
        key = (password, encoded)
        if key not in self._checked:
            self._checked[key] = bool(check_password(password, encoded))
        return self._checked[key]

    # --- Project and users -----------------------------------------------------------------------------

    def _project(self) -> tuple[Project, bool]:
        project: Project | None = Project.objects.filter(slug=PROJECT_SLUG).first()
        if project is not None:
            return project, False
        taxonomy = json.loads((DEMO_DIR / "taxonomy.json").read_text(encoding="utf-8"))
        return project_create(
            actor=None, slug=PROJECT_SLUG, name="SMS spam (demo)", taxonomy=taxonomy, overlap=2,
            strategy="default", seed_queries=SEED_QUERIES, gold_rate=0.05,
            description="A sample of the SMS Spam Collection (Almeida & Gómez Hidalgo, CC BY 4.0). "
                        "Each message needs two reviewers.",
        ), True

    def _users(self, project: Project, password: str, *, source: str, project_created: bool,
               reset: bool) -> list[str]:
        """Create missing demo users (and, with ``reset``, restore the rest); return what differs from the demo."""
        user_model = get_user_model()
        new_password = reset or self._password_is_new(password, source)
        notes: list[str] = []
        for username, role in USERS:
            with transaction.atomic():
                user = user_model.objects.filter(username=username).first()
                created = user is None
                if user is None:
                    user = user_model(username=username)
                    user.password = self._encoded(password)
                    if username == "admin":
                        user.is_superuser = user.is_staff = True
                    user.save()
                else:
                    changed: list[str] = []
                    if new_password and not self._matches(password, user.password):
                        user.password = self._encoded(password)
                        changed.append("password")
                    if reset and not user.is_active:
                        user.is_active = True
                        changed.append("is_active")
                    if reset and username == "admin" and not (user.is_superuser and user.is_staff):
                        user.is_superuser = user.is_staff = True
                        changed += ["is_superuser", "is_staff"]
                    if changed:
                        user.save(update_fields=changed)
                current = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
                if current != role and (created or project_created or reset):
                    membership_add(actor=None, project=project, username=username, role=role)
                    current = role
            if created and not project_created:
                notes.append(f"{username} was missing and has been created again")
            if current is None:
                notes.append(f"{username} is not a member of {project.slug!r} (the demo made them {role})")
            elif current != role:
                notes.append(f"{username} is {current} in {project.slug!r} (the demo made them {role})")
            if not user.is_active:
                notes.append(f"{username} is deactivated")
            if username == "admin" and not (user.is_superuser and user.is_staff):
                notes.append("admin is no longer a superuser")
            if not created and not self._matches(password, user.password):
                notes.append(f"{username} has a password of their own, not the demo password")
        if new_password or _applied_hash() is None:
            _write_private(demo_password_applied_path(),
                           json.dumps({"database": _database(), "password": self._encoded(password)}))
        return notes

    # --- Items -----------------------------------------------------------------------------------------

    def _import(self, project: Project, name: str, *, gold: bool) -> SampleResult:
        """Import the rows of fixture ``name`` that the project lacks and that were never deleted from it."""
        with gzip.open(DEMO_DIR / name, "rb") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        rows = [(str(json.loads(line)["external_id"]), line) for line in lines]
        present = set(Item.objects.filter(project=project, external_id__in=[ext for ext, _ in rows])
                      .values_list("external_id", flat=True))
        deleted = {entry.get("external_id_sha256")
                   for data in AuditEvent.objects.filter(project=project, action="items.delete")
                   .values_list("data", flat=True)
                   for entry in (data or {}).get("items", [])}
        result = SampleResult(present=len(present))
        missing: list[tuple[str, bytes]] = []
        for ext, line in rows:
            if ext in present:
                continue
            if external_id_digest(project, ext) in deleted:
                result.deleted += 1
            else:
                missing.append((ext, line))
        if not missing:
            return result  # Nothing to write: no import, no audit row, no embedding request.
        body = io.BytesIO(b"\n".join(line for _, line in missing) + b"\n")
        try:
            summary = items_import(actor=None, project=project, source=body,
                                   filename=name.removesuffix(".gz"), gold=gold)
        except ServiceError as exc:  # The project refuses imports as a whole: report it, start anyway.
            result.rejected = len(missing)
            result.problems.append(f"{name}: {exc}")
            return result
        result.created, result.rejected = summary.created, summary.error_count
        for error in summary.errors:
            line = error["line"]
            ext = missing[line - 1][0] if 1 <= line <= len(missing) else "?"
            result.problems.append(f"{name} {ext!r}: {error['error']}")
        if summary.error_count > len(summary.errors):
            result.problems.append(f"{name}: {summary.error_count - len(summary.errors)} more rows")
        return result
