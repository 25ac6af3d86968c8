"""Intention-revealing filters: projects scoped to their members (``get_for``), items and leases by state.

A reusable filter lives here; a rule about one object lives on its model; a
workflow across models lives in labeling/services.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F
from django.http import Http404
from django.utils import timezone

from labeling.models.roles import role_allows

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


def caller_may(role: str | None, capability: str) -> None:
    """The one access rule for a project: no membership (``role`` None) is 404, so a project's existence is not
    leaked; a role without ``capability`` is 403. ``ProjectQuerySet.get_for`` applies it to an ORM read, and the
    queue's hand-written read (labeling/api/views_queue.py) to its own row; tests/labeling/api/test_access_parity.py
    checks that the two reads find the same role."""
    if role is None:
        raise Http404
    if not role_allows(role, capability):
        raise PermissionDenied(f"your role ({role}) may not {capability.replace('_', ' ')} here")


class ProjectQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def for_user(self, user: AbstractBaseUser | AnonymousUser) -> ProjectQuerySet:
        """Only the projects ``user`` is a member of: every API lookup starts here (no IDOR)."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)

    def get_for(self, user: AbstractBaseUser | AnonymousUser, slug: str, capability: str) -> Any:
        """The project ``slug`` if ``user`` may ``capability`` it.

        A non-member gets 404 (the project's existence is not leaked); a member whose
        role lacks the capability gets 403.
        """
        if not user.is_authenticated:
            raise Http404
        row = (
            self.filter(slug=slug, memberships__user=user)
            .annotate(caller_role=F("memberships__role"))
            .first()
        )
        caller_may(row.caller_role if row is not None else None, capability)
        return row

    def with_role(self, user: AbstractBaseUser | AnonymousUser, roles: Iterable[str]) -> ProjectQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user, memberships__role__in=list(roles))


class ItemQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def open(self) -> ItemQuerySet:
        """Items that still need at least one more annotation."""
        return self.filter(n_done__lt=F("n_required"))

    def finished(self) -> ItemQuerySet:
        return self.filter(n_done__gte=F("n_required"))

    def unlabelled(self) -> ItemQuerySet:
        return self.filter(n_done=0)

    def gold(self) -> ItemQuerySet:
        return self.filter(is_gold=True)


class LeaseQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def holding(self) -> LeaseQuerySet:
        """Leases that still hold their item right now (active and not yet expired)."""
        return self.filter(state="active", expires_at__gt=timezone.now())

    def expired_unclosed(self) -> LeaseQuerySet:
        return self.filter(state="active", expires_at__lte=timezone.now())
