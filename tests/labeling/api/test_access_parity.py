"""One access rule, two reads: ``Project.objects.get_for`` (the ORM, every endpoint) and the queue's plain-SQL read
(labeling/api/views_queue.py, by slug and by lease) find the same role for every caller, and ``caller_may`` turns it
into the same 200 / 403 / 404 for every capability."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from labeling.api import views_queue
from labeling.models import Capability, Lease, Project, Role, SelectionReason
from labeling.querysets import caller_may
from labeling.rows import first_instance
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, ProjectFactory, UserFactory, member

pytestmark = pytest.mark.django_db


def outcome(read: Any) -> str:
    try:
        found = read()
    except Http404:
        return "404"
    except PermissionDenied:
        return "403"
    return f"ok:{found.pk}"


def allowed(row: Any, capability: str) -> Any:
    caller_may(getattr(row, "caller_role", None), capability)
    return row


def test_the_queue_read_and_get_for_decide_alike_for_every_role_and_capability() -> None:
    project = ProjectFactory(slug="parity", taxonomy=SMS_TAXONOMY)
    other = ProjectFactory(slug="elsewhere", taxonomy=SMS_TAXONOMY)
    item = ItemFactory(project=other)
    callers = {role: member(project, username=f"u-{role}", role=role) for role in Role.values}
    callers["outsider"] = member(other, username="outsider", role=Role.ADMIN)
    callers["nobody"] = UserFactory(username="nobody")
    lease = Lease.objects.create(project=other, item=item, reviewer=callers["outsider"],
                                 expires_at=timezone.now() + timedelta(minutes=5),
                                 selection_reason=SelectionReason.FALLBACK_RANDOM)
    checked = 0
    for name, user in callers.items():
        request = SimpleNamespace(user=user)
        sql_row = first_instance(Project, views_queue._BY_SLUG, [user.pk, "parity"])
        orm_row = Project.objects.filter(slug="parity", memberships__user=user).values_list(
            "memberships__role", flat=True).first()
        assert (getattr(sql_row, "caller_role", None), name) == (orm_row, name)
        for capability in Capability.values:
            by_orm = outcome(lambda user=user, capability=capability: Project.objects.get_for(user, "parity",
                                                                                              capability))
            by_sql = outcome(lambda row=sql_row, capability=capability: allowed(row, capability))
            assert (name, capability, by_sql) == (name, capability, by_orm)
            checked += 1
        expected_label = outcome(lambda user=user: Project.objects.get_for(user, "parity", Capability.LABEL))
        assert outcome(lambda request=request: views_queue._labelling_project(
            request, views_queue._BY_SLUG, "parity")) == expected_label
        # By lease: the lease's project, "elsewhere", where only the outsider is a member (an admin).
        expected_lease = outcome(lambda user=user: Project.objects.get_for(user, "elsewhere", Capability.LABEL))
        assert outcome(lambda request=request: views_queue._lease_project(request, lease.pk)) == expected_lease
    assert checked == len(callers) * len(Capability.values)
    assert outcome(lambda: Project.objects.get_for(callers["reviewer"], "parity", Capability.EXPORT)) == "403"
    assert outcome(lambda: Project.objects.get_for(callers["nobody"], "parity", Capability.VIEW)) == "404"
    assert outcome(lambda: Project.objects.get_for(callers["admin"], "parity", Capability.MANAGE)) == f"ok:{project.pk}"
