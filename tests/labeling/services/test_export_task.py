"""The ``sift.labeling.export_snapshot`` task: ids in, call twice, effect once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labeling.models import AuditEvent, ExportSnapshot
from labeling.tasks import export_snapshot
from tests.labeling.services.test_export_roundtrip import EXPECTED, build_world

pytestmark = pytest.mark.django_db


def test_call_twice_effect_once(settings: Any, tmp_path: Path) -> None:
    settings.EXPORT_ROOT = tmp_path
    world = build_world()
    engineer = world.users["alice"].__class__.objects.get(username="engineer")
    params = {"format": "parquet", "split": [0.5, 0.25, 0.25], "seed": 2, "reviewers": [], "labels": []}
    first = export_snapshot.apply(args=[world.project.pk, "nightly", params, engineer.pk]).get()
    second = export_snapshot.apply(args=[world.project.pk, "nightly", params, engineer.pk],
                                   kwargs={"from_a_newer_producer": True}).get()
    assert first == second == {"name": "nightly", "sha256": first["sha256"], "rows": len(EXPECTED)}
    snapshot = ExportSnapshot.objects.get()
    assert (snapshot.name, snapshot.created_by, snapshot.params["split"]) == ("nightly", engineer, [0.5, 0.25, 0.25])
    assert AuditEvent.objects.filter(action="export.snapshot").count() == 1
    assert len(list((tmp_path / f"project-{world.project.pk}").iterdir())) == 1
    assert export_snapshot.name == "sift.labeling.export_snapshot"


def test_a_deleted_project_is_a_no_op(settings: Any, tmp_path: Path) -> None:
    settings.EXPORT_ROOT = tmp_path
    assert export_snapshot.apply(args=[987654, "nightly", {"format": "csv"}]).get() is None
    assert ExportSnapshot.objects.count() == 0


def test_a_requested_snapshot_runs_once_however_often_the_task_is_delivered(settings: Any, tmp_path: Path) -> None:
    from labeling.services.exports import export_params_parse, export_snapshot_request

    settings.EXPORT_ROOT = tmp_path
    world = build_world()
    engineer = world.users["alice"].__class__.objects.get(username="engineer")
    requested = export_snapshot_request(project=world.project, actor=engineer, name="weekly",
                                        params=export_params_parse({"format": "csv"}), enqueue=False)
    assert (requested.status, requested.attempts, requested.path) == ("pending", 0, "")
    args = [world.project.pk, "weekly", requested.params, engineer.pk]
    results = [export_snapshot.apply(args=args).get() for _ in range(2)]
    snapshot = ExportSnapshot.objects.get()
    assert results == [{"name": "weekly", "sha256": snapshot.sha256, "rows": len(EXPECTED)}] * 2
    assert (snapshot.status, snapshot.attempts, snapshot.created_by) == ("done", 1, engineer)
    assert AuditEvent.objects.filter(action="export.snapshot").count() == 1
    assert [p.name for p in (tmp_path / f"project-{world.project.pk}").iterdir()] == [
        f"weekly-{snapshot.sha256[:16]}.csv"]
