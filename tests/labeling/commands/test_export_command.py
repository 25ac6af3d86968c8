"""``manage.py export``: the contract's flags, atomic output, cards, snapshots and clear errors."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from labeling.models import ExportSnapshot, Item
from tests.labeling.services.test_export_roundtrip import EXPECTED, World, build_world, export_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(settings: Any, tmp_path: Path) -> World:
    settings.EXPORT_ROOT = tmp_path / "exports"
    return build_world()


def run(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("export", *args, stdout=out)
    summary: dict[str, Any] = json.loads(out.getvalue())
    return summary


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_writes_the_same_bytes_as_the_api_and_prints_a_summary(world: World, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"train.{fmt}"
    summary = run("--project", "sms-export", "--format", fmt, "--out", str(out), "--aggregation", "dawid_skene")
    data = out.read_bytes()
    assert summary == {"path": str(out), "rows": len(EXPECTED), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}
    assert data == export_bytes(world.project, format=fmt, aggregation="dawid_skene")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export-")] == []


def test_split_seed_and_card(world: World, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    run("--project", "sms-export", "--format", "jsonl", "--out", str(out), "--split", "0.5,0.25,0.25", "--seed", "3",
        "--card", "--gold", "exclude", "--min-annotators", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["external_id"] for r in rows] == ["m1", "m2", "m3", "m4", "m5"]
    stored = dict(Item.objects.filter(project=world.project).values_list("external_id", "split"))
    assert {r["external_id"]: r["split"] for r in rows} == {k: stored[k] for k in ("m1", "m2", "m3", "m4", "m5")}
    card = json.loads(Path(f"{out}.card.json").read_text())
    assert card["rows"] == 5
    assert card["params"]["split"] == [0.5, 0.25, 0.25]
    assert card["params"]["min_annotators"] == 2
    assert Path(f"{out}.card.md").read_text().startswith("# Dataset card: sms-export\n")


def test_snapshot_from_the_command(world: World, tmp_path: Path) -> None:
    summary = run("--project", "sms-export", "--format", "csv", "--snapshot", "nightly")
    snapshot = ExportSnapshot.objects.get(name="nightly")
    assert summary == {"snapshot": "nightly", "rows": 8, "bytes": snapshot.size_bytes, "sha256": snapshot.sha256,
                       "path": snapshot.path}
    assert snapshot.created_by is None
    with pytest.raises(CommandError, match="a snapshot named 'nightly' already exists"):
        run("--project", "sms-export", "--format", "csv", "--snapshot", "nightly")


@pytest.mark.parametrize(("args", "message"), [
    (["--project", "nope", "--format", "csv", "--out", "x.csv"], "no project with slug 'nope'"),
    (["--project", "sms-export", "--format", "csv"], "give --out PATH or --snapshot NAME"),
    (["--project", "sms-export", "--format", "csv", "--out", "{tmp}/x.csv", "--split", "1,1"],
     "split: give three fractions for train,validation,test, e.g. 0.8,0.1,0.1"),
    (["--project", "sms-export", "--format", "csv", "--out", "{tmp}/missing/x.csv"],
     "{tmp}/missing: no such directory"),
    (["--project", "sms-export", "--format", "csv", "--out", "{tmp}/x.csv", "--label", "nope"],
     "label: nope not in taxonomy version 2"),
])
def test_errors_are_clear_and_write_nothing(world: World, tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert str(caught.value) == message.replace("{tmp}", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert list(Item.objects.exclude(split=None).values_list("id", flat=True)) == []


def test_a_failed_export_keeps_the_previous_file(world: World, tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "train.jsonl"
    out.write_text("previous\n")
    # The atomic write streams through the name it imported (exports/snapshots.py): break it there.
    from labeling.services.exports import snapshots

    def broken(prepared: Any) -> Any:
        yield b"partial"
        raise RuntimeError("database went away")

    monkeypatch.setattr(snapshots, "export_stream", broken)
    with pytest.raises(RuntimeError):
        run("--project", "sms-export", "--format", "jsonl", "--out", str(out))
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
