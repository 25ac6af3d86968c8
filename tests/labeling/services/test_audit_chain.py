"""The audit log's hash chain and append-only rules (labeling/models/audit.py, labeling/services/audit.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from itertools import pairwise
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from labeling.models import AppendOnlyError, AuditChainHead, AuditEvent, Project
from labeling.models.audit import audit_chain_key, canonical_json, canonical_time
from labeling.services.audit import audit_record, audit_verify
from tests.conftest import using_postgres
from tests.factories import ProjectFactory

TABLE = AuditEvent._meta.db_table
assert TABLE == "labeling_auditevent"  # spelled out in the raw SQL below


def system_chain(project: Project) -> int:
    return audit_chain_key(project.pk, None)


def _chain(project: Project) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(chain=system_chain(project)).order_by("seq"))


def _write(project: Project | None, n: int, action: str = "test.event") -> list[AuditEvent]:
    obj: Any = project if project is not None else AuditChainHead(chain=0)
    return [audit_record(actor=None, action=action, obj=obj, project=project, data={"n": i, "t": ("a", 1.5)})
            for i in range(n)]


def _raw(sql: str, params: list[Any]) -> None:
    """An UPDATE or DELETE behind the application's back, as someone with database access would send it."""
    with connection.cursor() as cursor:
        if using_postgres():
            cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER labeling_auditevent_append_only")
        cursor.execute(sql, params)
        if using_postgres():
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER labeling_auditevent_append_only")


@pytest.mark.django_db
def test_rows_chain_per_project_with_the_documented_hash() -> None:
    first, second = ProjectFactory(slug="chain-a"), ProjectFactory(slug="chain-b")
    created_a = AuditEvent.objects.filter(chain=system_chain(first)).count()  # project.create wrote the first rows
    _write(first, 3)
    _write(second, 2)
    _write(None, 2)
    rows = _chain(first)
    assert [r.seq for r in rows] == list(range(1, created_a + 4))
    assert rows[0].prev_hash == ""
    for before, row in pairwise(rows):
        assert row.prev_hash == before.row_hash
    # The formula, spelled out independently of the model's helper.
    last = rows[-1]
    fields = {"chain": system_chain(first), "seq": last.seq, "project_id": first.pk, "actor_id": None,
              "action": "test.event", "object_type": "project", "object_id": str(first.pk),
              "data": {"n": 2, "t": ["a", 1.5]}, "created_at": canonical_time(last.created_at)}
    expected = hashlib.sha256((last.prev_hash + json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).encode()).hexdigest()
    assert last.row_hash == expected
    assert last.data == {"n": 2, "t": ["a", 1.5]}  # stored as hashed (the tuple became a list)
    head = AuditChainHead.objects.get(chain=system_chain(first))
    assert (head.seq, head.head_hash) == (last.seq, last.row_hash)
    assert [r.seq for r in AuditEvent.objects.filter(chain=0).order_by("seq")] == [1, 2]
    report = audit_verify()
    assert report.ok, report.as_dict()
    assert report.chains == 3
    assert report.rows == AuditEvent.objects.count()
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


@pytest.mark.django_db
def test_a_row_changed_through_raw_sql_breaks_the_chain_at_that_row() -> None:
    project = ProjectFactory(slug="tampered")
    rows = _write(project, 5)
    target = rows[2]
    assert audit_verify(project=project).ok
    _raw("UPDATE labeling_auditevent SET data = %s WHERE id = %s", ['{"n": 99, "t": ["a", 1.5]}', target.pk])
    report = audit_verify(project=project)
    assert not report.ok
    broken = report.first_break
    assert broken is not None
    assert (broken.chain, broken.row_id, broken.seq) == (system_chain(project), target.pk, target.seq)
    assert "changed" in broken.problem
    assert len(report.breaks) == 1  # one report per chain: its first broken row


@pytest.mark.django_db
def test_a_row_changed_with_its_hash_recomputed_breaks_the_chain_at_the_next_row() -> None:
    project = ProjectFactory(slug="rehashed")
    rows = _write(project, 4)
    target = AuditEvent.objects.get(pk=rows[1].pk)
    target.action = "forged"
    forged_hash = target.compute_hash()
    _raw("UPDATE labeling_auditevent SET action = %s, row_hash = %s WHERE id = %s", ["forged", forged_hash, target.pk])
    broken = audit_verify(project=project).first_break
    assert broken is not None
    assert (broken.row_id, broken.problem) == (rows[2].pk, "prev_hash is not the hash of the row before it")


@pytest.mark.django_db
def test_deleted_rows_show_as_a_gap_or_as_a_head_past_the_end() -> None:
    project = ProjectFactory(slug="deleted-rows")
    rows = _write(project, 4)
    _raw("DELETE FROM labeling_auditevent WHERE id = %s", [rows[1].pk])
    broken = audit_verify(project=project).first_break
    assert broken is not None
    assert (broken.row_id, broken.seq) == (rows[2].pk, rows[2].seq)
    assert "missing" in broken.problem

    other = ProjectFactory(slug="truncated-tail")
    tail = _write(other, 3)
    _raw("DELETE FROM labeling_auditevent WHERE id = %s", [tail[-1].pk])
    broken = audit_verify(project=other).first_break
    assert broken is not None
    assert (broken.row_id, broken.seq) == (tail[-2].pk, tail[-2].seq)
    assert "rows after it were deleted" in broken.problem


@pytest.mark.django_db
def test_the_model_refuses_updates_and_deletes() -> None:
    project = ProjectFactory(slug="append-only")
    event = _write(project, 1)[0]
    before = list(AuditEvent.objects.order_by("id").values())
    event.action = "changed"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="changed")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_create([AuditEvent(action="x", object_type="x", object_id="1")])
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert list(AuditEvent.objects.order_by("id").values()) == before


@pytest.mark.django_db
def test_postgres_refuses_update_and_delete_from_any_client(postgres_only: None) -> None:
    project = ProjectFactory(slug="trigger")
    event = _write(project, 1)[0]
    for sql in ("UPDATE labeling_auditevent SET action = 'x' WHERE id = %s",
                "DELETE FROM labeling_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.row_hash) == ("test.event", event.row_hash)


@pytest.mark.django_db
def test_deleting_a_project_or_a_user_leaves_its_history_intact() -> None:
    from django.contrib.auth import get_user_model

    project = ProjectFactory(slug="short-lived")
    user = get_user_model().objects.create(username="leaver")
    audit_record(actor=user, action="test.by_user", obj=project, project=project)
    rows = list(AuditEvent.objects.filter(project_id=project.pk).order_by("chain", "seq").values())
    project_id = project.pk
    # (The pointer to the current taxonomy is PROTECT: cleared first, as a project deletion would have to.)
    Project.objects.filter(pk=project_id).update(current_taxonomy_version=None)
    Project.objects.filter(pk=project_id).delete()
    user.delete()
    assert list(AuditEvent.objects.filter(project_id=project_id).order_by("chain", "seq").values()) == rows
    assert audit_verify().ok


@pytest.mark.django_db
def test_verify_command_reports_and_exits_non_zero_on_a_break(capsys: pytest.CaptureFixture[str]) -> None:
    project = ProjectFactory(slug="commanded")
    rows = _write(project, 2)
    call_command("verify_audit_log", "--project", "commanded")
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["heads"] == {str(system_chain(project)): rows[-1].row_hash}
    _raw("UPDATE labeling_auditevent SET object_id = %s WHERE id = %s", ["999", rows[0].pk])
    with pytest.raises(SystemExit) as exited:
        call_command("verify_audit_log")
    assert exited.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(b["chain"], b["row_id"]) for b in report["breaks"]] == [(system_chain(project), rows[0].pk)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_a_chain(postgres_only: None) -> None:
    project = ProjectFactory(slug="concurrent-audit")
    start = AuditEvent.objects.filter(chain=system_chain(project)).count()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def writer() -> None:
        try:
            barrier.wait()
            for i in range(15):
                with transaction.atomic():
                    audit_record(actor=None, action="test.concurrent", obj=project, project=project, data={"i": i})
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seqs = AuditEvent.objects.filter(chain=system_chain(project)).order_by("seq").values_list("seq", flat=True)
    assert list(seqs) == list(range(1, start + 91))
    assert audit_verify(project=project).ok


@pytest.mark.django_db
def test_each_actor_has_its_own_chain_and_the_project_report_covers_them_all() -> None:
    from django.contrib.auth import get_user_model

    project = ProjectFactory(slug="per-actor")
    alice, bob = (get_user_model().objects.create(username=name) for name in ("alice", "bob"))
    by_alice = [audit_record(actor=alice, action="test.a", obj=project, project=project) for _ in range(3)]
    by_bob = [audit_record(actor=bob, action="test.b", obj=project, project=project) for _ in range(2)]
    assert {row.chain for row in by_alice} == {(project.pk << 32) + alice.pk}
    assert {row.chain for row in by_bob} == {(project.pk << 32) + bob.pk}
    assert [row.seq for row in by_alice] == [1, 2, 3] and [row.seq for row in by_bob] == [1, 2]
    assert by_bob[0].prev_hash == ""  # bob's chain starts fresh: it never saw alice's rows

    report = audit_verify(project=project)
    assert report.ok, report.as_dict()
    assert report.rows == AuditEvent.objects.filter(project_id=project.pk).count()
    assert set(report.heads) == {system_chain(project), by_alice[0].chain, by_bob[0].chain}
    assert report.heads[by_bob[0].chain] == by_bob[-1].row_hash

    _raw("UPDATE labeling_auditevent SET action = %s WHERE id = %s", ["forged", by_alice[1].pk])
    report = audit_verify(project=project)
    assert [(b.chain, b.row_id) for b in report.breaks] == [(by_alice[0].chain, by_alice[1].pk)]


@pytest.mark.django_db
def test_a_legacy_per_project_chain_is_still_verified_with_the_project() -> None:
    """Rows written before per-actor chains carry the bare project id as their chain, and stay a closed chain."""
    project = ProjectFactory(slug="legacy-chain")
    legacy = AuditEvent(project=project, action="test.legacy", object_type="project", object_id=str(project.pk),
                        data={}, chain=project.pk, seq=1, prev_hash="")
    legacy.row_hash = legacy.compute_hash()
    legacy.save(force_insert=True)
    AuditChainHead.objects.create(chain=project.pk, seq=1, head_hash=legacy.row_hash)
    _write(project, 2)
    report = audit_verify(project=project)
    assert report.ok and report.heads[project.pk] == legacy.row_hash
    assert report.chains == 2  # the legacy chain and the system's per-actor chain

    _raw("DELETE FROM labeling_auditevent WHERE id = %s", [legacy.pk])
    report = audit_verify(project=project)
    assert [(b.chain, b.problem) for b in report.breaks] == [
        (project.pk, "the chain head is at seq 1 but no rows remain")]


def test_chain_keys_refuse_ids_outside_their_range() -> None:
    assert audit_chain_key(None, 7) == 0
    assert audit_chain_key(3, None) == 3 << 32
    with pytest.raises(ValueError, match="outside"):
        audit_chain_key(2**31, 1)
    with pytest.raises(ValueError, match="outside"):
        audit_chain_key(1, 2**32)


@pytest.mark.django_db(transaction=True)
def test_one_reviewers_open_audit_write_never_blocks_another_reviewer(postgres_only: None) -> None:
    """The point of per-actor chains: with one chain per project, the second writer waited for the first's commit."""
    from django.contrib.auth import get_user_model

    project = ProjectFactory(slug="no-waiting")
    alice, bob = (get_user_model().objects.create(username=name) for name in ("alice", "bob"))
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def alice_submits_slowly() -> None:
        try:
            with transaction.atomic():
                audit_record(actor=alice, action="test.slow", obj=project, project=project)
                holding.set()
                release.wait(timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            holding.set()
            connection.close()

    thread = threading.Thread(target=alice_submits_slowly)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '3s'")
            audit_record(actor=bob, action="test.fast", obj=project, project=project)  # would time out if queued
        assert AuditEvent.objects.filter(action="test.slow").count() == 0  # alice's is still uncommitted
    finally:
        release.set()
        thread.join()
    assert errors == []
    assert AuditEvent.objects.filter(action__in=["test.slow", "test.fast"]).count() == 2
    assert audit_verify(project=project).ok
