"""Does ``make demo`` on PostgreSQL serve a team? 24 reviewers label the demo project over real HTTP.

``.venv/bin/python bench/demo_reviewers.py [--reviewers 24] [--think 1.0] [--duration 60] [--url URL]``

With ``DATABASE_URL`` set (PostgreSQL), this runs ``make demo``'s own steps (the Makefile's ``demo`` target
without ``install`` and ``assets``: ``manage.py migrate``, ``manage.py load_demo``, ``python -m config.run_demo``)
on a new database (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_demo_reviewers_bench``;
its name must end in ``_bench``: it is dropped and created), a temporary data directory and a free port, so the
web app, the Celery worker and beat all run as the demo runs them (``REDIS_URL`` is passed through when set,
otherwise the file-system broker, as the demo). ``--url`` targets a demo that is already running instead (then
the reviewers are added to its database, which ``DATABASE_URL`` must name).

Then ``--reviewers`` reviewer accounts (members of the demo project, overlap 2, each with an API token) label
for ``--duration`` seconds, each on its own keep-alive HTTP connection, in two phases:

a. the API's two calls per item: ``POST queue/next`` (timed: the next-item latency), then the submit;
b. the labelling page's loop: one ``POST .../submit`` with ``next: true`` per item (timed: the reviewer's wait
   between two items).

Each reviewer thinks ``--think`` seconds (default 1 s, far quicker than a person reads a message) between
items; ``--think 0`` is a closed loop, every reviewer asking again the moment it is answered. It prints per phase
the cycles/s, p50/p95/p99/max, errors and 204s, the load average before and after, and the goal: next-item p99
<= 250 ms in both phases. Then it stops the demo (SIGINT to the supervisor) and drops nothing: the database is
left for inspection (the next run re-creates it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._support import recreate_database  # noqa: E402

SLUG = "sms-demo"
GOAL_P99_MS = 250.0
LABELS = ("ham", "spam")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviewers", type=int, default=24)
    parser.add_argument("--think", type=float, default=1.0, help="seconds each reviewer waits between items")
    parser.add_argument("--duration", type=float, default=45.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds at the start of each phase")
    parser.add_argument("--url", help="a running demo to target (its database is DATABASE_URL)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    return parser.parse_args()


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_env(database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIFT_")}
    env.update({"DATABASE_URL": database_url, "SIFT_DEMO": "1", "SIFT_DATA_DIR": str(data_dir), "PORT": str(port),
                "SIFT_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "SIFT_DEMO_PASSWORD": secrets.token_urlsafe(16)})
    return env


def start_demo(env: dict[str, str]) -> subprocess.Popen[bytes]:
    python = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
    for step in (["manage.py", "migrate", "--noinput", "-v", "0"],
                 ["manage.py", "load_demo", "-v", "0", "--skip-checks"]):
        subprocess.run([python, *step], cwd=ROOT, env=env, check=True)
    demo = subprocess.Popen([python, "-m", "config.run_demo"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL)
    port = int(env["PORT"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SystemExit(f"the demo exited with {demo.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/login/")
            if conn.getresponse().status == 200:
                conn.close()
                return demo
        except OSError:
            pass
        time.sleep(0.5)
    stop_demo(demo)
    raise SystemExit("the demo did not answer within 120 s")


def stop_demo(demo: subprocess.Popen[bytes]) -> None:
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)  # the supervisor stops web, worker and beat
        try:
            demo.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def add_reviewers(database_url: str, count: int, data_dir: Path | None) -> list[str]:
    """``count`` reviewers of the demo project, with API tokens (created through the ORM, in this process)."""
    os.environ.update({"DATABASE_URL": database_url, "SIFT_DEMO": "1", "DJANGO_SETTINGS_MODULE": "config.settings"})
    if data_dir is not None:
        os.environ["SIFT_DATA_DIR"] = str(data_dir)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership, Project

    project = Project.objects.get(slug=SLUG)
    tokens = []
    for n in range(count):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-reviewer{n:02d}")
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": "reviewer"})
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    return tokens


@dataclass
class Result:
    waits_ms: list[float] = field(default_factory=list)
    submits_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    empty: int = 0


class Reviewer:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.held: int | None = None

    def post(self, path: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object] | None]:
        payload = json.dumps(body).encode() if body is not None else b""
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def submit_body(self, chained: bool) -> dict[str, object]:
        return {"labels": [secrets.choice(LABELS)], "idempotency_key": secrets.token_hex(8), "lead_time_ms": 1000,
                **({"next": True} if chained else {})}

    def two_calls(self, result: Result, measured: bool) -> None:
        t0 = time.perf_counter()
        status, body = self.post(f"/api/projects/{SLUG}/queue/next")
        t1 = time.perf_counter()
        if status == 204:
            result.empty += 1
            return
        if status != 200 or body is None:
            result.errors.append(f"queue/next {status}: {body}")
            return
        lease_id = body["lease"]["id"]  # type: ignore[index]
        status, answer = self.post(f"/api/leases/{lease_id}/submit", self.submit_body(False))
        t2 = time.perf_counter()
        if status != 201:
            result.errors.append(f"submit {status}: {answer}")
        if measured:
            result.waits_ms.append((t1 - t0) * 1000)
            result.submits_ms.append((t2 - t1) * 1000)

    def chained(self, result: Result, measured: bool) -> None:
        if self.held is None:
            status, body = self.post(f"/api/projects/{SLUG}/queue/next")
            if status != 200 or body is None:
                result.empty += status == 204
                return
            self.held = int(body["lease"]["id"])  # type: ignore[index]
        t0 = time.perf_counter()
        status, answer = self.post(f"/api/leases/{self.held}/submit", self.submit_body(True))
        t1 = time.perf_counter()
        self.held = None
        if status != 201 or answer is None:
            result.errors.append(f"submit+next {status}: {answer}")
            return
        following = answer.get("next")
        if following is None:
            result.empty += 1
        else:
            self.held = int(following["lease"]["id"])  # type: ignore[index]
        if measured:
            result.waits_ms.append((t1 - t0) * 1000)


def run_phase(port: int, tokens: list[str], *, chained: bool, think: float, warmup: float,
              duration: float) -> tuple[Result, float]:
    reviewers = [Reviewer(port, token) for token in tokens]
    results = [Result() for _ in reviewers]
    start = time.perf_counter() + 0.2
    measure_from, stop_at = start + warmup, start + warmup + duration

    def loop(index: int) -> None:
        # Staggered starts, so the reviewers do not all ask in the same instant.
        time.sleep(max(0.0, start - time.perf_counter()) + think * index / len(reviewers))
        reviewer, result = reviewers[index], results[index]
        while (now := time.perf_counter()) < stop_at:
            try:
                (reviewer.chained if chained else reviewer.two_calls)(result, now >= measure_from)
            except Exception as exc:  # a dropped connection is an error to count, not a crash
                result.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)
            if think:
                time.sleep(think)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(reviewers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = Result()
    for result in results:
        merged.waits_ms += result.waits_ms
        merged.submits_ms += result.submits_ms
        merged.errors += result.errors
        merged.empty += result.empty
    return merged, duration


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def describe(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50):7.1f}  p95 {percentile(values, 95):7.1f}  p99 {percentile(values, 99):7.1f}"
            f"  max {max(values, default=float('nan')):7.1f} ms (n={len(values)})")


def main() -> None:
    args = parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    if not args.url:
        database_url = os.environ.get("BENCH_DATABASE_URL",
                                      "postgres://postgres@127.0.0.1:5432/sift_demo_reviewers_bench")
    if not database_url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL (or BENCH_DATABASE_URL) to PostgreSQL: this measures the demo on it")
    print(f"load average before: {load()}")
    demo: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    try:
        if args.url:
            port = urlsplit(args.url).port or 80
        else:
            recreate_database(database_url, ())
            data_dir = Path(tempfile.mkdtemp(prefix="sift-demo-reviewers-"))
            port = free_port()
            started = time.perf_counter()
            demo = start_demo(demo_env(database_url, data_dir, port))
            print(f"make demo's steps on {urlsplit(database_url).path.lstrip('/')}: serving after "
                  f"{time.perf_counter() - started:.1f} s on port {port} (load average {load()})")
        tokens = add_reviewers(database_url, args.reviewers, data_dir)
        print(f"{args.reviewers} reviewers, overlap 2, think time {args.think:g} s, {args.duration:g} s measured per "
              f"phase after {args.warmup:g} s")
        failed = False
        for name, chained in (("queue/next", False), ("submit+next", True)):
            result, duration = run_phase(port, tokens, chained=chained, think=args.think, warmup=args.warmup,
                                         duration=args.duration)
            p99 = percentile(result.waits_ms, 99)
            ok = p99 <= GOAL_P99_MS and not result.errors and result.waits_ms
            failed = failed or not ok
            print(f"{name:<12} {len(result.waits_ms) / duration:6.1f} cycles/s  {describe(result.waits_ms)}"
                  f"  errors {len(result.errors)}  204s {result.empty}  (load average {load()})")
            if result.submits_ms:
                print(f"{'  submit':<12} {'':>15}  {describe(result.submits_ms)}")
            if result.errors:
                print(f"    e.g. {result.errors[0]}")
            print(f"goal next-item p99 <= {GOAL_P99_MS:g} ms ({name}): {p99:.1f} ms -> {'met' if ok else 'NOT met'}")
        print(f"load average after: {load()}")
    finally:
        if demo is not None:
            stop_demo(demo)
        if data_dir is not None and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
