"""Writing and verifying the audit log. Every service that changes state calls ``audit_record`` in its transaction.

The chain rule and why concurrent writers cannot fork it are stated in labeling/models/audit.py. The cost on
the submit path: two statements on PostgreSQL (an upsert that locks and moves the chain head; the INSERT and
the head's new hash in one statement), three on SQLite. The head lock is held from the audit write to the
commit, so callers write their audit row LAST in their transaction (annotation_submit does). There is one
chain per (project, actor), so one reviewer's submit never waits for another's, and projects never wait for
each other; only one actor's concurrent writes (a system task beside another) queue for that short tail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from labeling.models import AuditChainHead, AuditEvent, Project
from labeling.models.audit import audit_chain_key, audit_chain_range, canonical_json

# Who performs an action: a user, or None for the system (commands, workers).
Actor = User | AnonymousUser | None


def acting_user(actor: Actor) -> User | None:
    """The user to stamp on a row: None for the system and for anonymous callers."""
    if actor is None or isinstance(actor, AnonymousUser):
        return None
    return actor


# Take the chain's head: one upsert that locks the head row (creating it for a chain's first row), moves it on
# by one and returns the new seq with the previous row's hash (RETURNING shows head_hash as it was: this
# statement does not set it). A concurrent writer of the same chain blocks here until this transaction ends.
_BUMP_HEAD = """
INSERT INTO labeling_auditchainhead (chain, seq, head_hash) VALUES (%s, 1, '')
ON CONFLICT (chain) DO UPDATE SET seq = labeling_auditchainhead.seq + 1
RETURNING seq, head_hash
"""
# PostgreSQL: the event and the head's new hash in one statement (one round trip less on every audited write).
_INSERT_AND_MOVE_HEAD = """
WITH event AS (
    INSERT INTO labeling_auditevent (project_id, actor_id, action, object_type, object_id, data, created_at,
                                     chain, seq, prev_hash, row_hash)
    VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s) RETURNING id
)
UPDATE labeling_auditchainhead SET head_hash = %s WHERE chain = %s RETURNING (SELECT id FROM event)
"""


def audit_record(*, actor: Actor, action: str, obj: Any,
                 project: Project | None = None, data: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event to the (project, actor) chain, inside the caller's transaction (or a new one)."""
    # Stored exactly as hashed: a round trip through the canonical form turns tuples into lists and so on.
    payload = canonical_json(data or {})
    user = acting_user(actor)
    chain = audit_chain_key(project.pk if project is not None else None, user.pk if user is not None else None)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(_BUMP_HEAD, [chain])
        seq, prev_hash = cursor.fetchone()
        event = AuditEvent(
            project=project, actor=user, action=action,
            object_type=type(obj)._meta.model_name if hasattr(type(obj), "_meta") else type(obj).__name__,
            object_id=str(getattr(obj, "pk", "")), data=json.loads(payload),
            created_at=timezone.now(), chain=chain, seq=seq, prev_hash=prev_hash,
        )
        event.row_hash = event.compute_hash()
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_AND_MOVE_HEAD, [
                event.project_id, event.actor_id, event.action, event.object_type, event.object_id, payload,
                event.created_at, chain, seq, prev_hash, event.row_hash, event.row_hash, chain])
            event.pk = cursor.fetchone()[0]
            event._state.adding = False
        else:
            event.save(force_insert=True)
            AuditChainHead.objects.filter(chain=chain).update(head_hash=event.row_hash)
    return event


# ---------------------------------------------------------------------------------------------------------------
# Verification.


@dataclass
class ChainBreak:
    chain: int
    row_id: int | None
    seq: int | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "row_id": self.row_id, "seq": self.seq, "problem": self.problem}


@dataclass
class AuditReport:
    rows: int = 0
    chains: int = 0
    heads: dict[int, str] = field(default_factory=dict)
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "chains": self.chains,
                "breaks": [b.as_dict() for b in self.breaks],
                "heads": {str(chain): head for chain, head in sorted(self.heads.items())}}


def _project_chains(project: Project | None) -> Q:
    """Every chain of the project: its legacy per-project chain (key = project id) and its per-actor chains."""
    if project is None:
        return Q()
    low, high = audit_chain_range(project.pk)
    return Q(chain=project.pk) | Q(chain__gte=low, chain__lt=high)


def _rows(project: Project | None) -> Iterator[AuditEvent]:
    return (AuditEvent.objects.filter(_project_chains(project))
            .order_by("chain", "seq", "id").iterator(chunk_size=2000))


def audit_verify(*, project: Project | None = None) -> AuditReport:
    """Walk every chain (or the project's) and report, per chain, the first row where the chain breaks.

    A row breaks the chain when its ``seq`` is not the next one (a row before it was deleted), its
    ``prev_hash`` is not the hash of the row before, or its stored ``row_hash`` is not the hash of its own
    fields (it was changed). A chain whose head points past its last row lost its newest rows. Memory is one
    chunk of rows; the walk reads the table in (chain, seq) order, the unique index's order.
    """
    report = AuditReport()
    head_rows = list(AuditChainHead.objects.filter(_project_chains(project)).values_list("chain", "seq", "head_hash"))
    heads = {chain: seq for chain, seq, _ in head_rows}
    head_hashes = {chain: head_hash for chain, _, head_hash in head_rows}
    current: int | None = None
    expected_seq, prev_hash, broken, last_id = 0, "", False, None
    seen: set[int] = set()

    def close(chain: int) -> None:
        if not broken and heads.get(chain, expected_seq) != expected_seq:
            report.breaks.append(ChainBreak(chain, last_id, expected_seq, (
                f"the chain head is at seq {heads[chain]} but the last row is seq {expected_seq}: "
                "rows after it were deleted")))

    for event in _rows(project):
        report.rows += 1
        if event.chain != current:
            if current is not None:
                close(current)
            current, expected_seq, prev_hash, broken, last_id = event.chain, 0, "", False, None
            seen.add(event.chain)
        if broken:
            continue
        problem = None
        if event.seq != expected_seq + 1:
            problem = f"seq {event.seq} follows seq {expected_seq}: a row between them is missing"
        elif event.prev_hash != prev_hash:
            problem = "prev_hash is not the hash of the row before it"
        elif event.compute_hash() != event.row_hash:
            problem = "row_hash does not match the row's contents: the row was changed"
        if problem is not None:
            report.breaks.append(ChainBreak(event.chain, event.pk, event.seq, problem))
            broken = True
            continue
        expected_seq, prev_hash, last_id = event.seq, event.row_hash, event.pk
    if current is not None:
        close(current)
    for chain, seq in heads.items():
        if chain not in seen and seq:
            report.breaks.append(ChainBreak(chain, None, None, f"the chain head is at seq {seq} but no rows remain"))
    report.chains = len(seen | {c for c, s in heads.items() if s})
    report.heads = {chain: head for chain, head in head_hashes.items() if heads.get(chain)}
    return report
