"""Writing the audit log. Every service that changes state calls ``audit_record`` in its transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from labeling.models import AuditEvent, Project

# Who performs an action: a user, or None for the system (commands, workers).
Actor = User | AnonymousUser | None


def acting_user(actor: Actor) -> User | None:
    """The user to stamp on a row: None for the system and for anonymous callers."""
    if actor is None or isinstance(actor, AnonymousUser):
        return None
    return actor


def audit_record(*, actor: Actor, action: str, obj: Any,
                 project: Project | None = None, data: dict[str, Any] | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        project=project,
        actor=acting_user(actor),
        action=action,
        object_type=type(obj)._meta.model_name if hasattr(type(obj), "_meta") else type(obj).__name__,
        object_id=str(getattr(obj, "pk", "")),
        data=data or {},
    )
