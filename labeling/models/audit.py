"""The append-only audit log: one row per state-changing action, each row chained to the one before it.

THE CHAIN INVARIANT
===================
Rows form one hash chain per ``chain`` key: one chain per (project, actor) at write time, its key
``audit_chain_key(project_id, actor_id)`` = project_id * 2**32 + actor_id (actor 0 is the system), and chain 0
for actions outside any project. Rows written before per-actor chains keep their old key, the bare project
id: that chain is simply closed, and still verifies. Why per actor: a chain is a queue (see below), and one
chain per project made every reviewer's submit wait for every other's; a reviewer's own submits are
sequential anyway, so per-actor chains cost no waiting. In a chain, ``seq`` runs 1, 2, 3... without gaps,
each row's ``prev_hash`` is the ``row_hash`` of the row with ``seq - 1`` ("" for the first), and

    row_hash = sha256(prev_hash || canonical JSON of the row's fields)       (``AuditEvent.compute_hash``)

``AuditChainHead`` holds each chain's last ``seq`` and ``row_hash``. So a changed row breaks its own hash, a
deleted row leaves a gap in ``seq`` (and a ``prev_hash`` that points nowhere), and deleting the newest rows
leaves the head pointing past the end. labeling/services/audit.py ``audit_verify`` walks the chains and names
the first row where any of this fails.

Why nobody can fork a chain: a writer takes the chain's head row with an upsert (``INSERT ... ON CONFLICT DO
UPDATE SET seq = seq + 1 RETURNING``, which row-locks it) inside the transaction that inserts the event, and
holds it until that transaction ends. Two concurrent writers of the
same chain therefore read distinct heads in turn; and if a lock were ever skipped, the unique constraint on
(chain, seq) would make the second INSERT fail rather than let two rows claim one place. On SQLite the
transactions are IMMEDIATE (config/settings.py): writers are serialised before they read anything.

Append-only: ``save`` of an existing row, ``delete`` and the queryset's ``update``/``delete`` raise
``AppendOnlyError``, and on PostgreSQL a trigger (migration 0005) refuses UPDATE and DELETE from any client.
That is why ``project`` and ``actor`` are not database foreign keys: deleting a project or a user must leave
its history exactly as it was (an ON DELETE SET NULL would be an UPDATE of audit rows). The hash chain is
tamper-*evident*, not tamper-proof: someone who can disable the trigger and rewrite every later row and the
head can forge a consistent chain, which is why ``verify_audit_log`` prints the head hashes for keeping
elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    pass


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only")

    def _update(self, values: Any) -> Any:  # what other update paths reach
        raise AppendOnlyError("audit events are append-only")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        # Refused before Django opens its transaction, so the caller's transaction stays usable.
        raise AppendOnlyError("audit events are append-only")

    def bulk_create(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("audit events are written one at a time by labeling.services.audit.audit_record")


# A chain key packs (project, actor) into the existing bigint: the project id in the high 31 bits and the actor
# id in the low 32. Keys below 2**32 are the legacy per-project chains (and 0, outside any project).
_ACTOR_BITS = 32


def audit_chain_key(project_id: int | None, actor_id: int | None) -> int:
    """The chain a row written by ``actor_id`` (None: the system) in ``project_id`` joins."""
    if project_id is None:
        return 0
    actor = actor_id or 0
    if not 0 < project_id < 2**31 or not 0 <= actor < 2**_ACTOR_BITS:
        raise ValueError(f"project {project_id} / actor {actor_id} outside the audit chain key's range")
    return (project_id << _ACTOR_BITS) | actor


def audit_chain_range(project_id: int) -> tuple[int, int]:
    """The keys of the project's per-actor chains, as a half-open range [low, high)."""
    return project_id << _ACTOR_BITS, (project_id + 1) << _ACTOR_BITS


def canonical_json(value: Any) -> str:
    """The one serialisation hashes are taken over: sorted keys, no spaces, UTF-8 (not \\u escapes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditEvent(models.Model):
    # Plain columns, not database foreign keys: see the essay (history outlives the project and the user).
    project = models.ForeignKey("labeling.Project", null=True, blank=True, on_delete=models.DO_NOTHING,
                                db_constraint=False, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+")
    action = models.CharField(max_length=64, help_text="e.g. project.create, annotation.submit")
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    # Set by the writer before hashing (not auto_now_add, which would overwrite it after the hash was taken).
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    chain = models.BigIntegerField(
        default=0, help_text="audit_chain_key(project, actor) at write time; 0 outside any project.")
    seq = models.BigIntegerField(default=0, help_text="1, 2, 3... within the chain.")
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    row_hash = models.CharField(max_length=64, blank=True, default="")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["project", "-id"], name="audit_project_recent")]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_one_row_per_chain_position")]

    def hashed_fields(self) -> dict[str, Any]:
        return {
            "chain": self.chain, "seq": self.seq, "project_id": self.project_id, "actor_id": self.actor_id,
            "action": self.action, "object_type": self.object_type, "object_id": self.object_id,
            "data": self.data, "created_at": canonical_time(self.created_at),
        }

    def compute_hash(self) -> str:
        payload = self.prev_hash + canonical_json(self.hashed_fields())
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("audit events are append-only")

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.object_type}:{self.object_id}"


class AuditChainHead(models.Model):
    """The newest row of one chain: the lock writers queue on, and the anchor that shows a truncated tail."""

    chain = models.BigIntegerField(primary_key=True)
    seq = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"audit chain {self.chain} at {self.seq}"
