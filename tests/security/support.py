"""A seeded world for the security tests: two projects with every kind of row an endpoint can show.

``seed_world(text)`` builds, through the real services (so every row is one the app itself would write):

- project ``sms`` (overlap 2) with one member per role plus ``reviewer2``; items with meta; taxonomy v1 and a
  published v2 (so history, diffs and migrations have content); submitted annotations with comments; an active
  lease held by each labelling member; a decided and a pending adjudication; a named export snapshot;
- project ``other`` with its own admin ``outsider``, items, a lease and an adjudication: the data that must
  never leak to members of ``sms``.

Every user-editable string goes through ``text(field, n)``: plain words for the authorisation and fuzz tests,
XSS payloads for the browser test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

from labeling.models import Adjudication, Annotation, ExportSnapshot, Item, Lease, Membership, Project
from labeling.services.adjudication import adjudication_decide, adjudication_open
from labeling.services.annotations import annotation_submit
from labeling.services.exports import export_params_parse, export_snapshot_create
from labeling.services.projects import project_create
from labeling.services.queues import queue_checkout_next
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save

PASSWORD = "correct-horse-battery"  # the password tests.frontend.conftest.log_in types
ROLES = ("reviewer", "policy_lead", "ml_engineer", "admin")
LABELLERS = ("reviewer", "policy_lead", "admin", "reviewer2")

TextFn = Callable[[str, int], str]


def plain_text(field_name: str, n: int) -> str:
    return f"{field_name} {n}"


@dataclass
class World:
    project: Project
    other: Project
    users: dict[str, Any]
    active_leases: dict[str, int] = field(default_factory=dict)
    submitted_leases: dict[str, int] = field(default_factory=dict)
    other_lease: int = 0
    adjudication_pending: int = 0
    adjudication_decided: int = 0
    other_adjudication: int = 0
    snapshot: str = "first-snapshot"
    other_snapshot: str = "other-snapshot"
    # Strings of project "other" that must never appear in an answer to a member of "sms".
    other_secrets: list[str] = field(default_factory=list)
    # Items of "sms" built to break things (add_hostile_items): deep meta, a huge text.
    hostile_items: list[int] = field(default_factory=list)


def _user(username: str) -> Any:
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model(username=username)
        user.set_password(PASSWORD)
        user.save()
    return user


def _taxonomy(text: TextFn, *, extra: bool = False) -> dict[str, Any]:
    labels: list[dict[str, Any]] = [
        {"key": "ham", "name": text("label.name", 1), "description": text("label.description", 1),
         "positive_examples": [text("label.positive_example", 1)],
         "negative_examples": [text("label.negative_example", 1)]},
        {"key": "spam", "name": text("label.name", 2), "description": text("label.description", 2),
         "severity": 3, "action": "remove"},
        {"key": "abuse", "name": text("label.name", 3), "description": text("label.description", 3),
         "children": [
             {"key": "threat", "name": text("label.name", 4), "description": text("label.description", 4)},
             {"key": "slur", "name": text("label.name", 5), "description": text("label.description", 5)},
         ]},
    ]
    if extra:
        labels.append({"key": "scam", "name": text("label.name", 6), "description": text("label.description", 6)})
    return {"name": text("taxonomy.name", 1), "multi_label": False, "labels": labels}


def _items(project: Project, text: TextFn, count: int, prefix: str) -> list[Item]:
    rows = []
    for n in range(count):
        body = text("item.text", n)
        rows.append(Item(
            project=project, external_id=f"{prefix}-{n}" if n % 3 else text("item.external_id", n)[:255],
            text=body, content_hash=hashlib.sha256(body.encode()).hexdigest(), n_required=project.overlap,
            meta={"source": text("item.meta.value", n), text("item.meta.key", n)[:200]: text("item.meta.value", n),
                  "image_url": "https://images.example.org/pic.png"},
        ))
    return Item.objects.bulk_create(rows)


def _label_one(project: Project, user: Any, labels: list[str], comment: str) -> int:
    lease = queue_checkout_next(project=project, reviewer=user)
    assert lease is not None, f"no item left for {user.username}"
    annotation_submit(lease_id=lease.pk, reviewer=user, labels=labels, comment=comment)
    return lease.pk


def seed_world(text: TextFn = plain_text, *, n_items: int = 12) -> World:
    users = {role: _user(role) for role in (*ROLES, "reviewer2", "outsider")}
    # "admin" is also the site's administrator: it may create projects (SIFT_PROJECT_CREATORS), no one else may.
    users["admin"].user_permissions.add(Permission.objects.get(codename="add_project",
                                                               content_type__app_label="labeling"))
    project = project_create(actor=None, slug="sms", name=text("project.name", 1), taxonomy=_taxonomy(text),
                             overlap=2)
    Project.objects.filter(pk=project.pk).update(description=text("project.description", 1))
    for role in ROLES:
        Membership.objects.create(project=project, user=users[role], role=role)
    Membership.objects.create(project=project, user=users["reviewer2"], role="reviewer")

    other = project_create(actor=None, slug="other", name="Confidential other project",
                           taxonomy=_taxonomy(plain_text), overlap=1)
    Membership.objects.create(project=other, user=users["outsider"], role="admin")
    _items(project, text, n_items, "sms")
    other_items = _items(other, lambda f, n: f"other-secret-{f}-{n}", 3, "other-secret")

    # v2 of the taxonomy: one more label, so history, diff and guidelines have two versions.
    taxonomy_draft_save(actor=users["policy_lead"], project=project, document=_taxonomy(text, extra=True))
    taxonomy_draft_publish(actor=users["policy_lead"], project=project, changelog=text("taxonomy.changelog", 2))
    project.refresh_from_db()

    world = World(project=project, other=other, users=users)
    # Two answers per item on the first items: one agreement, one disagreement (-> adjudication).
    world.submitted_leases["reviewer"] = _label_one(project, users["reviewer"], ["spam"], text("comment", 1))
    world.submitted_leases["policy_lead"] = _label_one(project, users["policy_lead"], ["ham"], text("comment", 2))
    world.submitted_leases["admin"] = _label_one(project, users["admin"], ["spam"], text("comment", 3))
    world.submitted_leases["reviewer2"] = _label_one(project, users["reviewer2"], ["threat"], text("comment", 4))
    for role in LABELLERS:
        lease = queue_checkout_next(project=project, reviewer=users[role])
        assert lease is not None
        world.active_leases[role] = lease.pk

    pending = Adjudication.objects.filter(project=project, state="pending").order_by("id")
    open_items = list(Item.objects.filter(project=project, adjudication__isnull=True).order_by("id")
                      .values_list("external_id", flat=True)[:2])
    for external_id in open_items:
        adjudication_open(actor=users["policy_lead"], project=project, external_id=external_id,
                          note=text("adjudication.note", 1))
    first = pending.first()
    assert first is not None
    adjudication_decide(actor=users["policy_lead"], project=project, adjudication_id=first.pk, labels=["spam"],
                        note=text("adjudication.note", 2))
    world.adjudication_decided = first.pk
    world.adjudication_pending = Adjudication.objects.filter(project=project, state="pending").order_by("id")[0].pk

    export_snapshot_create(project=project, actor=users["ml_engineer"], name=world.snapshot,
                           params=export_params_parse({"format": "jsonl"}))

    # The other project's rows.
    other_lease = queue_checkout_next(project=other, reviewer=users["outsider"])
    assert other_lease is not None
    annotation_submit(lease_id=other_lease.pk, reviewer=users["outsider"], labels=["spam"],
                      comment="other-secret-comment")
    world.submitted_leases["outsider"] = other_lease.pk
    next_other = queue_checkout_next(project=other, reviewer=users["outsider"])
    assert next_other is not None
    world.other_lease = next_other.pk
    other_adjudication, _ = adjudication_open(actor=users["outsider"], project=other,
                                              external_id=other_items[0].external_id, note="other-secret-note")
    world.other_adjudication = other_adjudication.pk
    export_snapshot_create(project=other, actor=users["outsider"], name=world.other_snapshot,
                           params=export_params_parse({"format": "jsonl"}))
    world.other_secrets = ["other-secret", "Confidential other project"]
    return world


def table_counts() -> dict[str, int]:
    """Row counts of every labeling and learning table (and the auth tables), for "nothing changed" checks."""
    from django.apps import apps

    counts: dict[str, int] = {}
    for app_label in ("labeling", "learning", "auth", "authtoken"):
        for model in apps.get_app_config(app_label).get_models():
            counts[model._meta.label] = model._default_manager.count()
    return counts


def table_fingerprint() -> dict[str, Any]:
    """Counts plus the mutable state the denied writes could touch (lease states, drafts, decisions)."""
    return {
        "counts": table_counts(),
        "leases": sorted(Lease.objects.values_list("id", "state", "expires_at", "renewals")),
        "annotations": sorted(Annotation.objects.values_list("id", "labels", "comment")),
        "adjudications": sorted(Adjudication.objects.values_list("id", "state", "labels", "note")),
        "projects": sorted(Project.objects.values_list("id", "name", "current_taxonomy_version_id")),
        "snapshots": sorted(ExportSnapshot.objects.values_list("id", "name")),
        "vendor": connection.vendor,
    }


HOSTILE_DEPTH = 980
HUGE_CHARS = 1_000_000


def add_hostile_items(world: World) -> None:
    """Two items of ``sms`` that once broke the server (issue 16), so the fuzzer meets them on every operation:

    - ``hostile-deep``: meta nested 980 levels deep, stored as the first import stored it (written in SQL: the
      import now refuses it, and json.dumps itself would recurse);
    - ``hostile-huge``: a 1M-character non-ASCII text full of addresses, with masking on, where one pattern
      once took 17 s per queue/next.
    """
    deep = '{"k": ' + "[" * (HOSTILE_DEPTH - 1) + '"a@b.com"' + "]" * (HOSTILE_DEPTH - 1) + "}"
    huge = ("héllo wörld a@b.com +44 20 7946 0958 " * (HUGE_CHARS // 36 + 1))[:HUGE_CHARS]
    items = Item.objects.bulk_create([
        Item(project=world.project, external_id="hostile-deep", text="deep meta", n_required=world.project.overlap,
             content_hash=hashlib.sha256(b"deep meta").hexdigest()),
        Item(project=world.project, external_id="hostile-huge", text=huge, n_required=world.project.overlap,
             content_hash=hashlib.sha256(huge.encode()).hexdigest(), meta={"a@b.com": huge[:1000]}),
    ])
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Item._meta.db_table} SET meta = %s::jsonb WHERE id = %s",  # noqa: S608
                       [deep, items[0].pk])
    Project.objects.filter(pk=world.project.pk).update(mask_pii=True, mask_detectors=["email", "phone", "url"],
                                                       mask_patterns=[{"name": "letter", "pattern": r"\pL"}])
    world.project.refresh_from_db()
    world.hostile_items = [item.pk for item in items]
