"""The fault-injection soak: reviewers label over HTTP while workers, Redis and the web process are killed.

    python bench/soak.py [--quick] [--duration 600] [--reviewers 64] [--items 15000] [--database-url postgres://...]

Real parts only: PostgreSQL (``--database-url``; default: DATABASE_URL's database + ``_soak``), a private
redis-server on ``--redis-port`` (started and restarted here, never the shared one), the web app under gunicorn
(gthread, keep-alive) on ``--web-port``, two Celery workers and celery beat. ``--reviewers`` threads label
through the HTTP API with keep-alive sessions; each retries a failed request (connection refused or reset, 5xx)
with the SAME idempotency key, as a real client does. Faults: SIGKILL of a worker every minute (restarted at
once), one Redis restart (killed, data lost, down a few seconds), one web-process restart (SIGKILL, then started
again). Afterwards it asserts, and prints:

- acknowledged submits lost: a 201/200 the client received whose annotation is not in the database (must be 0);
- duplicate annotations: two annotations for one lease, idempotency key or (item, reviewer) (must be 0);
- over-held items: an item whose annotations plus live leases exceed its required overlap, sampled during the
  run and checked at the end (must be 0);
- learning catch-up: seconds from the last fault until an active model covers every label committed before it
  (must be <= 60), and from the end of labelling until one covers every label.

The learning loop's timers are shortened by environment (sweep 5 s, stale claim 15 s, lost message 15 s): the
production defaults (60 s, 300 s, 900 s) are sized for retrains of a million items, and the 60 s goal is about
this deployment recovering, which those knobs set. ``run`` is also what tests/reliability/test_soak.py calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._support import stop_process_group  # noqa: E402

TAXONOMY = {"name": "Soak", "multi_label": False, "labels": [
    {"key": "ham", "name": "Ham", "description": "Fine."}, {"key": "spam", "name": "Spam", "description": "Not."}]}
WORDS = ["win", "free", "prize", "call", "now", "claim", "cash", "offer", "meeting", "lunch", "tomorrow", "see",
         "you", "later", "thanks", "love", "home", "urgent", "account", "verify", "click", "link", "bank", "reply"]


@dataclass
class Config:
    database_url: str
    duration: float = 600.0
    reviewers: int = 64
    items: int = 15000
    overlap: int = 2
    redis_port: int = 6391
    web_port: int = 8391
    worker_kill_every: float = 60.0
    redis_down_seconds: float = 4.0
    think: tuple[float, float] = (0.3, 1.0)
    # (seconds after labelling starts, action); None: the standard plan built from the fields above.
    plan: list[tuple[float, str]] | None = None
    slug: str = field(default_factory=lambda: f"soak-{uuid.uuid4().hex[:8]}")
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sift-soak-")))


# --- Processes -------------------------------------------------------------------------------------------------


class Proc:
    """A child in its own session (process group), killed by that id only; its output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def _wait_http(port: int, timeout: float) -> None:
    """Until the web app answers a request (gunicorn binds its port before its workers have loaded Django)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/health/", timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError(f"the web app on port {port} did not answer within {timeout}s")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Cluster:
    def __init__(self, config: Config) -> None:
        self.config = config
        for port in (config.redis_port, config.web_port):
            if not _port_free(port):
                raise RuntimeError(f"port {port} is taken: pick another (--redis-port / --web-port)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update({
            "DATABASE_URL": config.database_url, "REDIS_URL": f"redis://127.0.0.1:{config.redis_port}/0",
            "SIFT_SECRET_KEY": secrets.token_urlsafe(48), "SIFT_ALLOWED_HOSTS": "127.0.0.1",
            "SIFT_SSL_REDIRECT": "0", "SIFT_DATA_DIR": str(config.log_dir / "data"), "SIFT_AXES_ENABLED": "0",
            "SIFT_LEARNING_SWEEP_SECONDS": "5", "SIFT_LEARNING_STALE_SECONDS": "15",
            "SIFT_LEARNING_QUEUED_STALE_SECONDS": "15", "SIFT_WORKER_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "SIFT_DEBUG": "0",
        })
        self.env = env
        py = sys.executable
        d = config.log_dir
        self.redis = Proc("redis", ["redis-server", "--port", str(config.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(d)], env, d)
        self.web = Proc("web", [py, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{config.web_port}",
                                "-k", "gthread", "-w", "2", "--threads", "8", "--keep-alive", "30",
                                "--graceful-timeout", "5", "--timeout", "60"], env, d)
        queues = "default,embedding,training,export"
        self.workers = [Proc(f"worker{i}", [py, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", "1",
                                            "-n", f"soak{i}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
                                            "--without-mingle", "-l", "INFO"], env, d) for i in range(2)]
        self.beat = Proc("beat", [py, "-m", "celery", "-A", "config", "beat", "-l", "INFO",
                                  "-s", str(d / "beat-schedule")], env, d)

    def start(self) -> None:
        self.redis.start()
        _wait_port(self.config.redis_port, 10)
        self.web.start()
        for worker in self.workers:
            worker.start()
        self.beat.start()
        _wait_http(self.config.web_port, 120)

    def stop(self) -> None:
        for proc in (self.beat, *self.workers, self.web):
            proc.kill()
        self.redis.kill()

    def restart_redis(self) -> None:
        self.redis.kill()  # SIGKILL, no persistence: every queued message is lost with it
        time.sleep(self.config.redis_down_seconds)
        self.redis.start()
        _wait_port(self.config.redis_port, 10)

    def redis_down(self) -> None:
        self.redis.kill()

    def redis_up(self) -> None:
        self.redis.start()
        _wait_port(self.config.redis_port, 10)

    def restart_web(self) -> None:
        self.web.kill()
        self.web.start()
        _wait_http(self.config.web_port, 120)

    def kill_worker(self, index: int) -> None:
        worker = self.workers[index]
        worker.kill()
        worker.start()


# --- Reviewers -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    acked: list[tuple[int, str, int, list[str]]] = field(default_factory=list)  # lease, key, annotation, labels
    # (monotonic time answered, seconds the submit took including retries, status) of every submit.
    timings: list[tuple[float, float, int]] = field(default_factory=list)
    submits: int = 0
    retries: int = 0
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


RETRYABLE_STATUS = {502, 503, 504}


def _reviewer(base: str, slug: str, token: str, stop: threading.Event, tally: Tally, think: tuple[float, float],
              seed: int) -> None:
    import requests

    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"

    def call(method: str, path: str, body: Any = None) -> requests.Response:
        """Retry connection errors and 5xx forever (same body, so the same idempotency key) until stopped."""
        delay = 0.2
        while True:
            try:
                response = session.request(method, base + path, json=body, timeout=30)
                if response.status_code not in RETRYABLE_STATUS and response.status_code < 500:
                    return response
                why = f"{response.status_code}"
            except requests.RequestException as exc:
                why = type(exc).__name__
            with tally.lock:
                tally.retries += 1
            if stop.is_set() and method == "POST" and path.endswith("/queue/next"):
                raise _Stopped(why)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    while not stop.is_set():
        try:
            got = call("POST", f"/api/projects/{slug}/queue/next")
        except _Stopped:
            return
        if got.status_code == 204:
            if "Retry-After" not in got.headers:
                return  # nothing left for this reviewer
            time.sleep(min(float(got.headers["Retry-After"]), 2.0))
            continue
        if got.status_code != 200:
            with tally.lock:
                tally.errors.append(f"next: {got.status_code} {got.text[:200]}")
            time.sleep(1)
            continue
        lease = got.json()["lease"]["id"]
        time.sleep(rng.uniform(*think))
        key = uuid.uuid4().hex
        labels = [rng.choice(("ham", "spam"))]
        sent_at = time.monotonic()
        done = call("POST", f"/api/leases/{lease}/submit", {"labels": labels, "idempotency_key": key})
        answered = time.monotonic()
        with tally.lock:
            tally.timings.append((answered, answered - sent_at, done.status_code))
            tally.submits += 1
            if done.status_code in (200, 201):
                tally.acked.append((lease, key, int(done.json()["annotation_id"]), labels))
            elif done.status_code == 409:
                tally.conflicts.append(done.text[:200])
            else:
                tally.errors.append(f"submit: {done.status_code} {done.text[:200]}")


class _Stopped(Exception):
    pass


# --- Checks ----------------------------------------------------------------------------------------------------


def _over_held(project_id: int) -> int:
    """Items whose annotations plus live leases exceed what they need: one query."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT COUNT(*) FROM (
                 SELECT i.id FROM labeling_item i
                 JOIN labeling_lease l ON l.item_id = i.id AND l.state = 'active' AND l.expires_at > now()
                 WHERE i.project_id = %s
                 GROUP BY i.id, i.n_required
                 HAVING COUNT(l.id) + (SELECT COUNT(*) FROM labeling_annotation a WHERE a.item_id = i.id)
                        > i.n_required) t""", [project_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _median(values: list[float]) -> float:
    return _quantile(values, 0.5)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 3)


def _newest_label(project_id: int) -> int:
    from django.db.models import Max

    from labeling.models import Annotation

    return int(Annotation.objects.filter(project_id=project_id).aggregate(m=Max("id"))["m"] or 0)


def _covered(project_id: int) -> int:
    from learning.models import ModelVersion

    active = (ModelVersion.objects.filter(project_id=project_id, status=ModelVersion.Status.ACTIVE)
              .order_by("-version").values_list("max_annotation_id", flat=True).first())
    return int(active or 0)


def _wait_covered(project_id: int, newest: int, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until an active model covers annotation ``newest``; None past ``timeout``."""
    from django.db import close_old_connections

    while time.monotonic() < since + timeout:
        close_old_connections()
        if _covered(project_id) >= newest:
            return round(time.monotonic() - since, 1)
        time.sleep(0.5)
    return None


def _setup(config: Config) -> tuple[int, list[str]]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership
    from labeling.services.items_import import items_import
    from labeling.services.projects import project_create

    User = get_user_model()
    # A fresh project and cast per run (the audit log is append-only, so an old run is never deleted).
    run_id = config.slug.removeprefix("soak-")
    admin = User.objects.create_superuser(username=f"soak-admin-{run_id}", password=secrets.token_urlsafe(16))
    project = project_create(actor=admin, slug=config.slug, name="Soak", taxonomy=TAXONOMY,
                             overlap=config.overlap, embedder="hashing")
    tokens = []
    for n in range(config.reviewers):
        user = User.objects.create_user(username=f"soak-r{n:02d}-{run_id}", password=secrets.token_urlsafe(16))
        Membership.objects.create(project=project, user=user, role="reviewer")
        tokens.append(Token.objects.create(user=user).key)
    rng = random.Random(7)
    lines = "".join(json.dumps({"external_id": f"soak-{n}", "text": " ".join(rng.choices(WORDS, k=12)) + f" {n}"})
                    + "\n" for n in range(config.items)).encode()
    import io

    summary = items_import(actor=admin, project=project, source=io.BytesIO(lines), file_format="jsonl")
    assert summary.created == config.items, summary.as_dict()
    return project.pk, tokens


def run(config: Config) -> dict[str, Any]:
    """Run the soak against ``config.database_url`` (this process's Django must point at the same database)."""
    from django.db import close_old_connections

    from labeling.models import Annotation, Item

    project_id, tokens = _setup(config)
    cluster = Cluster(config)
    cluster.start()
    faults: list[tuple[float, str]] = []
    samples: list[int] = []
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        # The workers embed the items and rank the cold start before reviewers come.
        from learning.models import ModelVersion

        deadline = time.monotonic() + 180
        while not ModelVersion.objects.filter(project_id=project_id, status="active").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no cold-start ranking after 180 s; logs in {config.log_dir}")
            time.sleep(0.5)
        stop = threading.Event()
        tally = Tally()
        base = f"http://127.0.0.1:{config.web_port}"
        threads = [threading.Thread(target=_reviewer, daemon=True,
                                    args=(base, config.slug, token, stop, tally, config.think, n))
                   for n, token in enumerate(tokens)]
        started = time.monotonic()
        for thread in threads:
            thread.start()

        d = config.duration
        plan = config.plan if config.plan is not None else [(t, f"kill_worker:{k % 2}") for k, t in
                enumerate(x * config.worker_kill_every + config.worker_kill_every * 0.5
                          for x in range(int(d // config.worker_kill_every) + 1))
                if t <= d * 0.9]
        if config.plan is None:
            plan += [(d * 0.4, "restart_redis"), (d * 0.6, "restart_web")]
        plan.sort()
        redis_down_at: float | None = None
        outages: list[tuple[float, float]] = []
        last_fault_newest = 0
        last_fault_at = started
        for at, action in plan:
            while time.monotonic() < started + at:
                time.sleep(0.5)
                close_old_connections()
                samples.append(_over_held(project_id))
            if action.startswith("kill_worker"):
                cluster.kill_worker(int(action.split(":")[1]))
            elif action == "restart_redis":
                down = time.monotonic()
                cluster.restart_redis()
                outages.append((down, time.monotonic()))
            elif action == "redis_down":
                cluster.redis_down()
                redis_down_at = time.monotonic()
            elif action == "redis_up":
                cluster.redis_up()
                assert redis_down_at is not None
                outages.append((redis_down_at, time.monotonic()))
            elif action == "restart_web":
                cluster.restart_web()
            else:
                raise ValueError(f"unknown fault {action!r}")
            faults.append((round(time.monotonic() - started, 1), action))
            last_fault_at = time.monotonic()
            last_fault_newest = _newest_label(project_id)
            print(f"[{faults[-1][0]:7.1f}s] {action}; newest label id {last_fault_newest}", flush=True)
        # Catch-up after the last fault, measured while reviewers keep labelling.
        after_fault = _wait_covered(project_id, last_fault_newest, last_fault_at, 90)
        while time.monotonic() < started + d:
            time.sleep(0.5)
            close_old_connections()
            samples.append(_over_held(project_id))
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        labelling_ended = time.monotonic()
        final_newest = _newest_label(project_id)
        after_end = _wait_covered(project_id, final_newest, labelling_ended, 120)
        close_old_connections()

        # --- The checks ---------------------------------------------------------------------------------------
        acked = {annotation_id: (lease, key, labels) for lease, key, annotation_id, labels in tally.acked}
        stored = {a["id"]: a for a in Annotation.objects.filter(project_id=project_id)
                  .values("id", "lease_id", "idempotency_key", "labels", "item_id", "reviewer_id")}
        lost = [aid for aid, (lease, key, labels) in acked.items()
                if aid not in stored or stored[aid]["lease_id"] != lease or stored[aid]["labels"] != labels]
        by_lease_acked: dict[int, set[int]] = {}
        for lease, _key, aid, _labels in tally.acked:
            by_lease_acked.setdefault(lease, set()).add(aid)
        from collections import Counter

        per_lease = Counter(a["lease_id"] for a in stored.values())
        per_key = Counter(a["idempotency_key"] for a in stored.values() if a["idempotency_key"])
        per_pair = Counter((a["item_id"], a["reviewer_id"]) for a in stored.values())
        duplicates = (sum(n - 1 for n in per_lease.values() if n > 1) + sum(n - 1 for n in per_key.values() if n > 1)
                      + sum(n - 1 for n in per_pair.values() if n > 1)
                      + sum(len(ids) - 1 for ids in by_lease_acked.values() if len(ids) > 1))
        over_held_end = _over_held(project_id)
        during = [(latency, status) for answered, latency, status in tally.timings
                  if any(start <= answered - latency and answered <= end for start, end in outages)]
        n_done_drift = Item.objects.filter(project_id=project_id).exclude(n_done=0).count() - len(
            {a["item_id"] for a in stored.values()})
        result = {
            "duration_s": round(labelling_ended - started, 1), "reviewers": config.reviewers,
            "submits_sent": tally.submits, "acknowledged": len(tally.acked), "annotations": len(stored),
            "client_retries": tally.retries, "conflicts_409": len(tally.conflicts), "other_errors": len(tally.errors),
            "faults": faults, "acknowledged_lost": len(lost), "duplicate_annotations": duplicates,
            "over_held_items_max_sampled": max(samples, default=0), "over_held_items_end": over_held_end,
            "items_with_n_done_drift": n_done_drift,
            "submits_while_redis_down": len(during),
            "submits_while_redis_down_ok": sum(1 for _, status in during if status in (200, 201)),
            "max_submit_s_while_redis_down": round(max((lat for lat, _ in during), default=0.0), 3),
            "median_submit_s_while_redis_down": _median([lat for lat, _ in during]),
            "median_submit_s_overall": _median([lat for _, lat, _ in tally.timings]),
            "p99_submit_s_overall": _quantile([lat for _, lat, _ in tally.timings], 0.99),
            "catch_up_after_last_fault_s": after_fault, "catch_up_after_labelling_s": after_end,
            "model_versions": ModelVersion.objects.filter(project_id=project_id).count(),
            "error_samples": tally.errors[:5], "conflict_samples": tally.conflicts[:5],
            "submits_per_s": round(len(tally.acked) / max(labelling_ended - started, 1e-9), 1),
            "logs": str(config.log_dir),
        }
    finally:
        cluster.stop()
    return result


def problems(result: dict[str, Any]) -> list[str]:
    """The soak's pass criteria; an empty list means it passed."""
    found = []
    if result["acknowledged_lost"]:
        found.append(f"{result['acknowledged_lost']} acknowledged submits lost")
    if result["duplicate_annotations"]:
        found.append(f"{result['duplicate_annotations']} duplicate annotations")
    if result["over_held_items_max_sampled"] or result["over_held_items_end"]:
        found.append("items held by more reviewers than they need")
    if result["catch_up_after_last_fault_s"] is None or result["catch_up_after_last_fault_s"] > 60:
        found.append(f"no model covering every label within 60 s of the last fault "
                     f"({result['catch_up_after_last_fault_s']})")
    if result["catch_up_after_labelling_s"] is None or result["catch_up_after_labelling_s"] > 60:
        found.append(f"no model covering every label within 60 s of the end ({result['catch_up_after_labelling_s']})")
    if result["acknowledged"] == 0:
        found.append("no submit was acknowledged at all")
    if result["other_errors"]:
        found.append(f"{result['other_errors']} unexpected answers: {result['error_samples']}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="90 s, 3,000 items, one fault of each kind (what make bench --quick runs)")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--reviewers", type=int, default=64)
    parser.add_argument("--items", type=int, default=15000)
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--web-port", type=int, default=8391)
    parser.add_argument("--worker-kill-every", type=float, default=60.0)
    parser.add_argument("--database-url", default=os.environ.get("SIFT_SOAK_DATABASE_URL", ""),
                        help="an expendable PostgreSQL database (default: DATABASE_URL's database name + '_soak', "
                             "created when missing)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.items, args.worker_kill_every = 90.0, 3000, 90.0
    url = args.database_url or _soak_database(os.environ.get("DATABASE_URL")
                                              or "postgres://postgres@127.0.0.1:5432/sift_bench")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SIFT_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    _fresh_database(url)
    django.setup()
    call_command("migrate", verbosity=0)
    config = Config(database_url=url, duration=args.duration, reviewers=args.reviewers, items=args.items,
                    redis_port=args.redis_port, web_port=args.web_port,
                    worker_kill_every=args.worker_kill_every)
    result = run(config)
    print(json.dumps(result, indent=2))
    found = problems(result)
    print("SOAK PASSED" if not found else "SOAK FAILED: " + "; ".join(found))
    return 0 if not found else 1


def _soak_database(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(path=parts.path.rstrip("/") + "_soak").geturl()


def _fresh_database(url: str) -> None:
    """Drop and create the soak's own database: every run starts from an empty, migrated schema."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "soak" not in name and "bench" not in name:
        raise SystemExit(f"refusing to drop {name!r}: the soak's database name must contain 'soak' or 'bench'")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    sys.exit(main())
