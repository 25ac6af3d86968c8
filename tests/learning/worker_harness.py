"""A real Celery worker in a subprocess, on the test database and a real Redis, for the worker tests.

The worker is started in its own session (process group) and stopped by that id only. It reads the same
settings module as the tests; the environment points it at pytest-django's test database, which the test's
transactional fixture commits into.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlunsplit

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
QUEUES = ("default", "embedding", "training")


def redis_available() -> bool:
    if not settings.REDIS_URL:
        return False
    try:
        import redis

        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:  # any connection error means "not available"
        return False


def purge_broker() -> None:
    """Drop this Redis database's Celery queues and unacked messages left by an earlier run."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")


def worker_database_url() -> str:
    db = connection.settings_dict
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    netloc = f"{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
    return urlunsplit(("postgres", netloc, "/" + str(db["NAME"]), "", ""))


class Worker:
    """``celery -A config worker -Q default,embedding,training --pool solo`` with its log in a temp file.

    ``pool="prefork"`` runs one pool child instead, so a test can SIGKILL the child running a task while the main
    process lives on and requeues the task's message (``reject_on_worker_lost``). ``write_pause`` runs the worker
    through tests/learning/paused_worker.py, whose ranking writes pause that many seconds after every batch."""

    def __init__(self, pool: str = "solo", *, write_pause: float | None = None, **env: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="sift-worker-", suffix=".log")[1])
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        environment.update({
            "DATABASE_URL": worker_database_url(), "REDIS_URL": str(settings.REDIS_URL), "SIFT_DEBUG": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "SIFT_WORKER_THREADS": "1",
            "SIFT_DB_CONN_MAX_AGE": "0", "PYTHONUNBUFFERED": "1",
        })
        environment.update(env)
        with self.log.open("wb") as out:
            launcher = (["-m", "celery"] if write_pause is None
                        else ["-m", "tests.learning.paused_worker", str(write_pause)])
            self.proc = subprocess.Popen(
                [sys.executable, *launcher, "-A", "config", "worker", "-Q", ",".join(QUEUES), "--pool", pool,
                 "--concurrency", "1",
                 "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-l", "INFO"],
                cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_for_log("ready", timeout=120)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker log never said {needle!r}:\n{self.text()[-4000:]}")

    def children(self) -> list[int]:
        """Pids of the worker's direct child processes (its prefork pool), read from /proc."""
        pids: list[int] = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            except OSError:  # the process ended while we looked
                continue
            if fields.get("PPid", "").strip() == str(self.proc.pid):
                pids.append(int(status.parent.name))
        return pids

    def kill_child(self, pid: int) -> None:
        """SIGKILL one pool child of this worker (the main process lives on and forks a new one)."""
        assert pid in self.children(), f"{pid} is not a child of this worker"
        os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (only ours: it has its own session)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.unlink(missing_ok=True)


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = worker.text()[-4000:] if worker is not None else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{tail}")


class Http:
    """A tiny JSON client for the live server (urllib: no extra dependency)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
             raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310 (http only)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (the test's own server)
                payload = response.read()
                return response.status, (json.loads(payload) if payload else None)
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, (json.loads(payload) if payload else None)
