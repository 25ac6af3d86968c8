"""Coalesced learning requests (learning/scheduling.py, learning/jobs.py): bursts, runs, follow-ups, lost signals."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerDown

from config.celery import app
from learning import jobs
from learning.models import LearningJob, ModelVersion
from learning.scheduling import request_embedding, request_retrain
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, ProjectFactory, UserFactory
from tests.learning.support import annotate

RETRAIN = LearningJob.Kind.RETRAIN
EMBED = LearningJob.Kind.EMBED


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Every message the real ``send`` publishes, captured at the Celery app (no broker involved)."""
    calls: list[tuple[str, list[Any], dict[str, Any]]] = []

    def fake_send_task(name: str, args: list[Any] | None = None, **options: Any) -> None:
        calls.append((name, list(args or []), options))

    monkeypatch.setattr(app, "send_task", fake_send_task)
    return calls


@pytest.fixture
def project(db: Any) -> Any:
    return ProjectFactory(slug="sched", taxonomy=SMS_TAXONOMY, embedder="hashing")


def _submit_like(project_id: int, captured: Any) -> None:
    """What annotation_submit does: request inside its transaction; the callback runs at commit."""
    with captured(execute=True), transaction.atomic():
        request_retrain(project_id=project_id)


def test_request_sends_only_after_commit_and_names_the_task(project: Any, sent: list[Any],
                                                            django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        request_retrain(project_id=project.pk)
        assert sent == []
    assert len(callbacks) == 1
    assert not LearningJob.objects.filter(project=project).exists()
    callbacks[0]()
    assert sent == [("sift.learning.retrain_project", [project.pk], sent[0][2])]
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.running_token) == (True, None)
    assert job.queued_at is not None


def test_rolled_back_submit_requests_nothing(project: Any, sent: list[Any],
                                             django_capture_on_commit_callbacks: Any) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        request_retrain(project_id=project.pk)
        raise RuntimeError("submit failed")
    assert callbacks == []
    assert sent == []
    assert not LearningJob.objects.filter(project=project).exists()


def test_burst_of_50_requests_enqueues_exactly_once(project: Any, sent: list[Any],
                                                   django_capture_on_commit_callbacks: Any) -> None:
    for _ in range(50):
        _submit_like(project.pk, django_capture_on_commit_callbacks)
    assert [name for name, _, _ in sent] == ["sift.learning.retrain_project"]
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert job.dirty is True
    assert job.runs == 0


def test_requests_during_a_run_give_exactly_one_follow_up(project: Any, sent: list[Any],
                                                         django_capture_on_commit_callbacks: Any) -> None:
    _submit_like(project.pk, django_capture_on_commit_callbacks)
    assert len(sent) == 1
    run = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert run is not None and run.requested is True
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.queued_at, job.running_token) == (False, None, run.token)

    # 20 labels arrive while the run is busy: they only set the flag.
    for _ in range(20):
        _submit_like(project.pk, django_capture_on_commit_callbacks)
    assert len(sent) == 1
    assert LearningJob.objects.get(project=project, kind=RETRAIN).dirty is True

    # The run ends: exactly one follow-up, and the flag stays up for it to clear.
    assert jobs.release(run, completed=True) is True
    assert len(sent) == 2
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.running_token, job.generation) == (True, None, 1)

    # The follow-up runs with nothing new arriving: no third message.
    follow_up = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert follow_up is not None
    assert jobs.release(follow_up, completed=True) is False
    assert len(sent) == 2
    assert LearningJob.objects.get(project=project, kind=RETRAIN).dirty is False


def test_a_second_delivery_during_a_run_does_nothing(project: Any, sent: list[Any]) -> None:
    first = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert first is not None
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert jobs.claim(kind=RETRAIN, project_id=project.pk) is None
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    # The duplicate did not clear the flag the live run has not seen.
    assert (job.dirty, job.running_token) == (True, first.token)


def test_no_label_is_lost_across_a_run(project: Any, sent: list[Any], django_capture_on_commit_callbacks: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A label committed while a retrain is running is learned by the follow-up that release() enqueues."""
    from learning.services import model_version_train
    from learning.services import retrain as retrain_module
    from tests.learning.support import embed_items

    items = [ItemFactory(project=project, text=f"text {i}") for i in range(12)]
    embed_items(items)
    reviewer = UserFactory(username="rev")
    for item, label in zip(items[:4], ["ham", "spam", "ham", "spam"], strict=True):
        annotate(item, reviewer, [label])

    from learning.services.pool import load_labels as real_load

    def load_then_label(**kwargs: Any) -> Any:
        out = real_load(**kwargs)
        # A reviewer submits after this run has read its labels.
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            annotate(items[4], reviewer, ["spam"])
            request_retrain(project_id=project.pk)
        return out

    monkeypatch.setattr(retrain_module, "load_labels", load_then_label)
    first = model_version_train(project_id=project.pk)
    monkeypatch.setattr(retrain_module, "load_labels", real_load)
    assert first.outcome == "activated" and first.version is not None
    assert ModelVersion.objects.get(project=project, version=first.version).n_labels == 4
    # The release sent the follow-up; running it learns the fifth label.
    assert [name for name, _, _ in sent] == ["sift.learning.retrain_project"]
    second = model_version_train(project_id=project.pk)
    assert second.outcome == "activated" and second.version is not None
    assert ModelVersion.objects.get(project=project, version=second.version).n_labels == 5
    assert LearningJob.objects.get(project=project, kind=RETRAIN).dirty is False


def test_broker_down_logs_leaves_the_flag_and_never_runs_inline(
    project: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down(*_args: Any, **_kwargs: Any) -> None:
        raise BrokerDown("Error 111 connecting to redis:6379. Connection refused.")

    def must_not_run(**_kwargs: Any) -> None:
        raise AssertionError("a retrain ran inside the request")

    monkeypatch.setattr(app, "send_task", down)
    monkeypatch.setattr("learning.services.retrain.model_version_train", must_not_run)
    with caplog.at_level("ERROR", logger="learning.jobs"):
        _submit_like(project.pk, django_capture_on_commit_callbacks)
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.queued_at, job.running_token) == (True, None, None)
    assert "left dirty for the sweep" in caplog.text

    # The broker is back: the periodic sweep enqueues it, once.
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    assert jobs.sweep() == {"flagged": 0, "enqueued": 1}
    assert jobs.sweep() == {"flagged": 0, "enqueued": 0}
    assert calls == ["sift.learning.retrain_project"]


def test_a_stale_claim_is_taken_over_and_the_old_run_notices(project: Any, sent: list[Any],
                                                            settings: Any) -> None:
    settings.SIFT_LEARNING_STALE_SECONDS = 60
    old = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert old is not None
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert sent == []  # a live run: no message
    LearningJob.objects.filter(project=project).update(running_since=timezone.now() - timedelta(seconds=61))
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert len(sent) == 1  # the silent run is presumed dead
    new = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert new is not None and new.token != old.token
    assert jobs.heartbeat(old) is False
    assert jobs.heartbeat(new) is True
    jobs.release(old, error="late")  # must not drop the new owner's claim
    assert LearningJob.objects.get(project=project, kind=RETRAIN).running_token == new.token


def test_a_lost_message_is_re_sent_after_the_queued_cutoff(project: Any, sent: list[Any], settings: Any) -> None:
    settings.SIFT_LEARNING_QUEUED_STALE_SECONDS = 600
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert len(sent) == 1
    LearningJob.objects.filter(project=project).update(queued_at=timezone.now() - timedelta(seconds=601))
    assert jobs.sweep()["enqueued"] == 1
    assert len(sent) == 2


def test_sweep_flags_labels_whose_signal_was_lost(project: Any, sent: list[Any]) -> None:
    item = ItemFactory(project=project)
    annotate(item, UserFactory(username="rev"), ["spam"])  # committed, but no request reached the scheduler
    assert jobs.sweep() == {"flagged": 1, "enqueued": 1}
    assert [name for name, _, _ in sent] == ["sift.learning.retrain_project"]
    # Already flagged and queued: the next sweep adds nothing.
    assert jobs.sweep() == {"flagged": 0, "enqueued": 0}
    # A model that has seen the label settles it for good.
    newest = item.annotations.get().pk
    ModelVersion.objects.create(project=project, version=1, fingerprint="x", max_annotation_id=newest,
                                embedder="hashing-v1-384", strategy="margin", status=ModelVersion.Status.ACTIVE)
    LearningJob.objects.filter(project=project).update(dirty=False, queued_at=None)
    assert jobs.sweep() == {"flagged": 0, "enqueued": 0}


def test_embedding_requests_coalesce_on_their_own_row(project: Any, sent: list[Any],
                                                      django_capture_on_commit_callbacks: Any) -> None:
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            request_embedding(project_id=project.pk)
            request_retrain(project_id=project.pk)
    assert sorted(name for name, _, _ in sent) == ["sift.learning.embed_project", "sift.learning.retrain_project"]
    assert set(LearningJob.objects.filter(project=project).values_list("kind", "dirty")) == {(EMBED, True),
                                                                                             (RETRAIN, True)}


def test_unknown_project_is_ignored(db: Any, sent: list[Any]) -> None:
    assert jobs.signal(kind=RETRAIN, project_id=987654) is False
    assert sent == []
    assert LearningJob.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_from_many_threads_send_one_message(postgres_only: None, sent: list[Any]) -> None:
    project = ProjectFactory(slug="race", taxonomy=SMS_TAXONOMY)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            barrier.wait()
            for _ in range(10):
                jobs.signal(kind=RETRAIN, project_id=project.pk)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(sent) == 1
    assert LearningJob.objects.filter(project=project).count() == 1


def test_a_request_while_a_message_is_pending_writes_nothing(project: Any, sent: list[Any]) -> None:
    """Dirty with a fresh queued_at: the skip reads the row and leaves it alone (no UPDATE of the hot job row)."""
    assert jobs.signal(kind=RETRAIN, project_id=project.pk) is True
    before = LearningJob.objects.values("dirty", "queued_at", "requested_at").get(project=project, kind=RETRAIN)
    with CaptureQueriesContext(connection) as queries:
        assert jobs.signal(kind=RETRAIN, project_id=project.pk) is False
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]
    assert LearningJob.objects.values("dirty", "queued_at", "requested_at").get(project=project, kind=RETRAIN) == before
    assert len(sent) == 1
    # Once a run has claimed (dirty and queued_at cleared), the next request must set the flag again.
    claim = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert claim is not None
    assert jobs.signal(kind=RETRAIN, project_id=project.pk) is False  # a live run: flag only, no send
    assert LearningJob.objects.values_list("dirty", flat=True).get(project=project, kind=RETRAIN) is True


def test_a_stalled_run_that_resumes_still_sends_its_follow_up_at_release(project: Any, sent: list[Any],
                                                                         settings: Any) -> None:
    """Issue 14: a delivery that finds the resumed run busy consumed the message; the release must not wait for
    the queued cutoff (15 minutes) before sending the follow-up."""
    settings.SIFT_LEARNING_STALE_SECONDS = 60
    run = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert run is not None
    # The run stalls past the stale cutoff; a request on the strength of it sends a message.
    LearningJob.objects.filter(project=project).update(running_since=timezone.now() - timedelta(seconds=61))
    assert jobs.signal(kind=RETRAIN, project_id=project.pk) is True
    assert len(sent) == 1
    # The run resumes (its heartbeat still matches its token) before the message is delivered.
    assert jobs.heartbeat(run) is True
    assert jobs.claim(kind=RETRAIN, project_id=project.pk) is None  # the delivery: busy
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.queued_at, job.running_token) == (True, None, run.token)
    assert len(sent) == 1  # busy: nothing sent yet, the live run will
    # The run ends: the follow-up goes at once.
    assert jobs.release(run, completed=True) is True
    assert len(sent) == 2
    follow_up = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert follow_up is not None and follow_up.requested is True


def test_a_run_releasing_between_a_busy_claim_and_its_clear_still_gets_a_follow_up(
    project: Any, sent: list[Any], settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other interleaving: the release's enqueue sees queued_at still set, so the busy delivery sends."""
    settings.SIFT_LEARNING_STALE_SECONDS = 60
    run = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert run is not None
    LearningJob.objects.filter(project=project).update(running_since=timezone.now() - timedelta(seconds=61))
    assert jobs.signal(kind=RETRAIN, project_id=project.pk) is True
    assert jobs.heartbeat(run) is True
    real = jobs.consumed_while_busy
    released: list[bool] = []

    def release_first(**kwargs: Any) -> bool:
        released.append(jobs.release(run, completed=True))  # the live run ends right here
        return real(**kwargs)

    monkeypatch.setattr(jobs, "consumed_while_busy", release_first)
    assert jobs.claim(kind=RETRAIN, project_id=project.pk) is None
    assert released == [False]  # the release could not send: queued_at was still set
    assert len(sent) == 2  # the busy delivery sent the follow-up instead
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.running_token) == (True, None)
    assert job.queued_at is not None


def test_a_redelivery_of_the_same_message_takes_over_its_dead_run_claim_at_once(project: Any, sent: list[Any]) -> None:
    """Issue 14: a message redelivered after its run was SIGKILLed finds the claim fresh; the same task id says the
    holder is gone, so it takes the claim over instead of being acked as "busy"."""
    dead = jobs.claim(kind=RETRAIN, project_id=project.pk, owner="task-1")
    assert dead is not None
    jobs.signal(kind=RETRAIN, project_id=project.pk)  # a label during the dead run: flag only
    assert sent == []
    # Another message (another task id) still finds the claim live.
    assert jobs.claim(kind=RETRAIN, project_id=project.pk, owner="task-2") is None
    assert LearningJob.objects.get(project=project, kind=RETRAIN).running_token == dead.token
    # The redelivery of task-1 takes it over, fresh as it is, and sees the flag.
    again = jobs.claim(kind=RETRAIN, project_id=project.pk, owner="task-1")
    assert again is not None and again.token != dead.token and again.requested is True
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.running_token, job.running_owner, job.dirty, job.runs) == (again.token, "task-1", False, 2)
    assert jobs.heartbeat(dead) is False  # the dead run, were it only frozen, would stop at its next check
    jobs.release(again, completed=True)
    assert LearningJob.objects.values_list("running_token", "running_owner").get(pk=job.pk) == (None, "")
    # A call outside Celery (no owner) never matches an empty owner of a live claim.
    manual = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert manual is not None
    assert jobs.claim(kind=RETRAIN, project_id=project.pk) is None


@pytest.mark.django_db(transaction=True)
def test_the_background_heartbeat_keeps_a_claim_fresh_while_the_run_is_inside_one_long_call(
    postgres_only: None, sent: list[Any], settings: Any,
) -> None:
    settings.SIFT_LEARNING_HEARTBEAT_SECONDS = 0.05
    project = ProjectFactory(slug="beat", taxonomy=SMS_TAXONOMY)
    run = jobs.claim(kind=RETRAIN, project_id=project.pk, owner="t")
    assert run is not None
    started = LearningJob.objects.values_list("running_since", flat=True).get(project=project, kind=RETRAIN)
    with jobs.heartbeating(run):
        # The run's own thread does nothing here (a long fit); the claim is refreshed all the same.
        deadline = time.monotonic() + 30
        while LearningJob.objects.values_list("running_since", flat=True).get(project=project) == started:
            assert time.monotonic() < deadline, "no background heartbeat within 30 s"
            time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == f"sift-claim-retrain-{project.pk}"]
    # Taken over (say, as stale after a freeze): the beat notices and stops on its own, leaving the new claim alone.
    LearningJob.objects.filter(project=project).update(running_token="someone-else")
    with jobs.heartbeating(run):
        beater = next(t for t in threading.enumerate() if t.name == f"sift-claim-retrain-{project.pk}")
        beater.join(timeout=30)
        assert not beater.is_alive()
    assert LearningJob.objects.values_list("running_token", flat=True).get(project=project) == "someone-else"
