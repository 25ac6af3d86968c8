"""A submit is acknowledged only once it is committed, and the reviewer path survives a dead cache and broker.

The first test looks from a SECOND database connection at the moment the view builds its 201: the annotation must
already be visible there, i.e. committed (it would not be under ATOMIC_REQUESTS or any outer transaction, where
the commit comes after the answer is built and can still fail). The others point the cache and the broker at a
port where nothing listens (the real Redis client, a refused connection) and label through the API.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import psycopg
import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from config.cache import ResilientRedisCache
from labeling.models import Annotation
from learning.models import LearningJob
from tests.conftest import REDIS_NEEDED, SMS_TAXONOMY, require_service
from tests.factories import ItemFactory, ProjectFactory, member
from tests.learning.worker_harness import redis_available, worker_database_url

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call is refused at once


def _labelling_world() -> tuple[Any, Any]:
    project = ProjectFactory(slug="durable", taxonomy=SMS_TAXONOMY, embedder="hashing")
    for n in range(3):
        ItemFactory(project=project, external_id=f"d{n}")
    return project, member(project, username="rev-durable", role="reviewer")


def test_the_201_is_built_after_the_annotation_is_committed(postgres_only: None, transactional_db: Any,
                                                            api_as: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from labeling.api import views_queue

    assert not any(db.get("ATOMIC_REQUESTS") for db in django_settings.DATABASES.values())
    project, reviewer = _labelling_world()
    seen: list[int] = []
    original = vars(views_queue)["submit_payload"]  # imported there from serializers_queue

    def payload_after_commit(annotation: Any, **kwargs: Any) -> Any:
        with psycopg.connect(worker_database_url()) as other:  # another session: sees committed rows only
            row = other.execute("SELECT COUNT(*) FROM labeling_annotation WHERE id = %s", [annotation.pk]).fetchone()
        seen.append(int(row[0]) if row else 0)
        return original(annotation, **kwargs)

    monkeypatch.setattr(views_queue, "submit_payload", payload_after_commit)
    monkeypatch.setattr("config.celery.app.send_task", lambda *a, **k: None)
    client = api_as(reviewer)
    lease = client.post(f"/api/projects/{project.slug}/queue/next").json()["lease"]["id"]
    response = client.post(f"/api/leases/{lease}/submit", {"labels": ["spam"], "idempotency_key": "k1"},
                           format="json")
    assert response.status_code == 201
    assert seen == [1]


def test_the_resilient_cache_answers_misses_fast_when_redis_is_refused() -> None:
    cache = ResilientRedisCache(DEAD_REDIS, {"OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}})
    started = time.perf_counter()
    assert cache.get("k", "default") == "default"
    assert cache.get_many(["a", "b"]) == {}
    cache.set("k", 1)
    cache.delete_many(["k"])
    assert cache.add("k", 1) is False
    with pytest.raises(ValueError, match="cache unavailable"):
        cache.incr("k")
    assert time.perf_counter() - started < 2.0


def test_the_cache_reuses_one_redis_client_across_calls_and_threads() -> None:
    """One ``redis.Redis`` per pool, not one per call (config/cache.py), and it still reads back what it wrote."""
    require_service("Redis", redis_available(), REDIS_NEEDED)
    cache = ResilientRedisCache(django_settings.REDIS_URL, {})
    client = cache._cache.get_client(write=True)
    key = f"sift-test-reuse-{time.monotonic_ns()}"
    cache.set(key, {"floor": 7}, timeout=30)
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append((cache.get(key), cache._cache.get_client(write=True))))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [value for value, _client in seen] == [{"floor": 7}] * 4
    assert {id(other) for _value, other in seen} == {id(client)}
    assert cache._cache.get_client(write=False) is cache._cache.get_client(write=False)
    cache.delete(key)
    assert cache.get(key, "gone") == "gone"


def test_a_hung_redis_costs_one_timeout_then_the_cache_skips_it() -> None:
    """A server that accepts connections and never answers (a hung Redis): one socket timeout, then misses at once."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # never accepted: the kernel completes the handshake, nobody ever replies
        port = hung.getsockname()[1]
        cache = ResilientRedisCache(f"redis://127.0.0.1:{port}/0",
                                    {"OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}})
        started = time.perf_counter()
        assert cache.get("k") is None
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(20):
            assert cache.get("k", 0) == 0
            cache.set("k", 1)
        rest = time.perf_counter() - started
    assert 0.4 <= first < 2.0, first
    assert rest < 0.05, rest


def _fresh_broker_pools(app: Any) -> None:
    """Drop every cached broker connection and producer pool, so the next send connects to ``broker_url`` anew.

    ``app.pool.force_close_all()`` alone is not enough: it closes kombu's shared pool for good, and the app keeps
    handing out that closed pool ("Acquire on closed pool") to every later test in this process.
    """
    from kombu import pools

    pools.reset()  # type: ignore[no-untyped-call]  # kombu ships no annotations for it
    app._pool = None
    app.amqp._producer_pool = None


def test_reviewers_label_while_cache_and_broker_are_down(db: Any, api_as: Any,
                                                         django_capture_on_commit_callbacks: Any) -> None:
    require_service("Redis", bool(django_settings.REDIS_URL),
                    f"{REDIS_NEEDED} (the broker without REDIS_URL is a folder, not Redis)")
    from config.celery import app

    project, reviewer = _labelling_world()
    client = api_as(reviewer)
    dead_cache = {"default": {"BACKEND": "config.cache.ResilientRedisCache", "LOCATION": DEAD_REDIS,
                              "OPTIONS": {"serializer": "django.core.signing.JSONSerializer",
                                          "socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    previous = app.conf.broker_url
    app.conf.broker_url = DEAD_REDIS
    _fresh_broker_pools(app)  # the producer pool must reconnect to the dead URL, as after a Redis crash
    try:
        with override_settings(CACHES=dead_cache):
            started = time.perf_counter()
            for n in range(3):
                got = client.post(f"/api/projects/{project.slug}/queue/next")
                assert got.status_code == 200, got.content
                # The submit's commit runs its on_commit enqueue (against the dead broker) before the answer.
                with django_capture_on_commit_callbacks(execute=True):
                    done = client.post(f"/api/leases/{got.json()['lease']['id']}/submit",
                                       {"labels": ["ham"], "idempotency_key": f"down-{n}"}, format="json")
                assert done.status_code == 201, done.content
            elapsed = time.perf_counter() - started
    finally:
        app.conf.broker_url = previous
        _fresh_broker_pools(app)
    assert Annotation.objects.filter(project=project).count() == 3
    assert elapsed < 5.0, f"three labels took {elapsed:.1f}s with Redis down"
    # Nothing was sent, nothing lost: the flag waits for the sweep.
    job = LearningJob.objects.get(project=project, kind=LearningJob.Kind.RETRAIN)
    assert (job.dirty, job.queued_at) == (True, None)
