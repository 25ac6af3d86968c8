"""labeling/rows.py builds from a plain-SQL row exactly the instance the ORM would load (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import models

from labeling.models import Item, Lease, Project
from labeling.rows import first_instance
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def _fields(instance: models.Model) -> dict[str, Any]:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_rows_come_back_as_the_orm_loads_them_json_and_dates_included() -> None:
    project = ProjectFactory(slug="rows", seed_queries=["free prize", "call now"])
    reviewer = member(project, username="rev", role="reviewer")
    ItemFactory(project=project, external_id="a", text="<b>hi</b>", meta={"lang": "en", "n": [1, 2.5, None]},
                gold_labels=["spam"])
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    for model, pk in ((Project, project.pk), (Item, lease.item_id), (Lease, lease.pk)):
        table = model._meta.db_table
        loaded = first_instance(model, f"SELECT * FROM {table} WHERE id = %s", [pk])  # noqa: S608 - a model table
        assert loaded is not None
        assert _fields(loaded) == _fields(model.objects.get(pk=pk))
        assert (loaded._state.adding, loaded._state.db) == (False, "default")
    item = first_instance(Item, "SELECT * FROM labeling_item WHERE id = %s", [lease.item_id])
    assert item is not None and item.meta == {"lang": "en", "n": [1, 2.5, None]}
    renewed = first_instance(Lease, "SELECT * FROM labeling_lease WHERE id = %s", [lease.pk])
    assert renewed is not None and isinstance(renewed.expires_at, datetime)
    assert renewed.expires_at.tzinfo is not None and renewed.expires_at.astimezone(UTC) == lease.expires_at


def test_extra_columns_become_attributes_and_missing_fields_are_deferred() -> None:
    project = ProjectFactory(slug="rows-extra")
    reviewer = member(project, username="rev", role="reviewer")
    loaded = first_instance(Project, "SELECT p.id, p.slug, m.role AS caller_role FROM labeling_project p "
                                     "JOIN labeling_membership m ON m.project_id = p.id WHERE m.user_id = %s",
                            [reviewer.pk])
    assert loaded is not None
    assert (loaded.pk, loaded.slug, loaded.caller_role) == (project.pk, "rows-extra", "reviewer")  # type: ignore[attr-defined]
    assert "name" in loaded.get_deferred_fields()
    assert loaded.name == project.name  # reading a deferred field loads it, as the ORM does


def test_no_row_is_none() -> None:
    assert first_instance(Project, "SELECT * FROM labeling_project WHERE id = %s", [-1]) is None
