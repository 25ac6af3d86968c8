"""How fast ``make demo`` shows active learning, with the venv already installed.

Runs the demo's own steps (the Makefile's ``demo`` target without ``install`` and ``assets``): ``manage.py
migrate``, ``manage.py load_demo``, ``python -m config.run_demo``, as a new user would, on a fresh temporary
data directory (SQLite and the file-system broker: ``DATABASE_URL`` and ``REDIS_URL`` are removed from the
environment) and a free port. From the moment the first step starts it measures:

- **first page**: the first 200 from ``GET /`` (following the redirect to the login page, as a browser does);
- **first active model**: the first ``ACTIVE`` entry in ``GET /api/projects/sms-demo/models/`` (as admin);
- the embedding progress the home page shows while it waits (``GET /api/projects/sms-demo/embedding/``,
  where the server has it).

It prints the figures and the load average (``os.getloadavg``, as ``uptime`` prints it) before and after,
then stops the demo (SIGINT to the supervisor, which stops web, worker and beat) and removes the data
directories (``--keep`` keeps them). A deadline bounds every wait: the run fails (status 1) rather than hang.

The same-run baseline is a fresh start with ``load_demo --no-vectors``: the same code, but the sample's
precomputed MiniLM vectors are left out, so the worker embeds the 1,530 items with MiniLM before the first
model, as every demo did before the vectors shipped. The ratios compare the two.

    python bench/demo_startup.py                 # a fresh start, then the baseline
    python bench/demo_startup.py --restart       # also stop and start again on the first data directory
    python bench/demo_startup.py --no-baseline   # the fresh start only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLUG = "sms-demo"
PASSWORD = "bench-demo-startup"  # noqa: S105 (the throw-away demo this run starts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 (http://127.0.0.1 only)
    if token:
        request.add_header("Authorization", f"Token {token}")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def token_for(base: str) -> str | None:
    body = json.dumps({"username": "admin", "password": PASSWORD}).encode()
    request = urllib.request.Request(f"{base}/api/auth/token/", data=body,  # noqa: S310 (http://127.0.0.1 only)
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our own local server)
            return str(json.loads(response.read())["token"])
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None


def run_step(argv: list[str], env: dict[str, str], deadline: float) -> float:
    started = time.monotonic()
    env = {"SIFT_LOG_LEVEL": "WARNING", **env}  # as the Makefile runs the set-up steps
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   timeout=max(1.0, deadline - started))
    return time.monotonic() - started


def one_start(env: dict[str, str], port: int, deadline_s: float, label: str,
              load_args: tuple[str, ...] = ()) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    python = sys.executable
    print(f"[{label}] before: {load()}", flush=True)
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    figures: dict[str, Any] = {}
    # As the Makefile's demo target runs them.
    figures["migrate_s"] = run_step([python, "manage.py", "migrate", "--noinput", "-v", "0"], env, deadline)
    figures["load_demo_s"] = run_step([python, "manage.py", "load_demo", "-v", "0", "--skip-checks", *load_args],
                                      env, deadline)
    log = open(Path(env["SIFT_DATA_DIR"]) / f"run_demo-{label}.log", "wb")  # noqa: SIM115 (closed below)
    demo = subprocess.Popen([python, "-m", "config.run_demo"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        token: str | None = None
        progress: list[str] = []
        while time.monotonic() < deadline:
            if demo.poll() is not None:
                raise RuntimeError(f"run_demo exited with {demo.returncode}; see {log.name}")
            if "first_page_s" not in figures:
                # The port opens before gunicorn's workers have loaded the app: the request waits for one.
                status, _ = get(f"{base}/", timeout=60)
                now = time.monotonic() - t0  # when the answer came, not when the request left
                if status == 200:
                    figures["first_page_s"] = now
                    print(f"[{label}] first page (200) after {now:.1f} s; {load()}", flush=True)
            if "first_page_s" in figures:
                token = token or token_for(base)
                if token:
                    status, body = get(f"{base}/api/projects/{SLUG}/embedding/", token=token)
                    now = time.monotonic() - t0
                    if status == 200:
                        state = json.loads(body)
                        text = f"{state.get('embedded')}/{state.get('total')}"
                        if not progress or progress[-1].split(" ")[0] != text:
                            progress.append(f"{text} at {now:.1f} s")
                    status, body = get(f"{base}/api/projects/{SLUG}/models/", token=token)
                    now = time.monotonic() - t0
                    if status == 200:
                        models = json.loads(body)
                        rows = models.get("results", models) if isinstance(models, dict) else models
                        if any(m.get("status") == "active" for m in rows):
                            figures["first_active_model_s"] = now
                            print(f"[{label}] first active model after {now:.1f} s; {load()}", flush=True)
                            break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"no active model within {deadline_s:.0f} s; see {log.name}")
        if progress:
            figures["embedding_progress_seen"] = progress
        figures["load_after"] = load()
        return figures
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        log.close()


def environment(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SIFT_DEMO="1", SIFT_DATA_DIR=str(data_dir), SIFT_DEMO_PASSWORD=PASSWORD, PORT=str(port),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds allowed per start (default 600)")
    parser.add_argument("--restart", action="store_true", help="start again on the first start's data directory")
    parser.add_argument("--no-baseline", action="store_true", help="skip the start without precomputed vectors")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    parser.add_argument("--quick", action="store_true", help="accepted for bench/run_all.py; same runs")
    args = parser.parse_args()

    port = free_port()
    demo_dir = Path(tempfile.mkdtemp(prefix="sift-demo-startup-"))
    base_dir = Path(tempfile.mkdtemp(prefix="sift-demo-startup-baseline-"))
    runs: list[tuple[str, Path, tuple[str, ...]]] = [("demo", demo_dir, ())]
    if args.restart:
        runs.append(("restart", demo_dir, ()))
    if not args.no_baseline:
        runs.append(("baseline: --no-vectors", base_dir, ("--no-vectors",)))
    print(f"make demo's steps on {os.cpu_count()} cores, SQLite and the file-system broker, port {port}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    status = 0
    try:
        for label, data_dir, load_args in runs:
            results[label] = one_start(environment(data_dir, port), port, args.deadline, label, load_args)
            print(f"[{label}] " + json.dumps(results[label]), flush=True)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"FAILED: {exc}", flush=True)
        status = 1
    finally:
        for data_dir in (demo_dir, base_dir):
            if args.keep or status:
                print(f"data dir kept: {data_dir}")
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
    demo, baseline = results.get("demo"), results.get("baseline: --no-vectors")
    if demo and baseline:
        print(f"first page: {demo['first_page_s']:.1f} s vs {baseline['first_page_s']:.1f} s without the vectors "
              f"({baseline['first_page_s'] / demo['first_page_s']:.2f}x); first active model: "
              f"{demo['first_active_model_s']:.1f} s vs {baseline['first_active_model_s']:.1f} s "
              f"({baseline['first_active_model_s'] / demo['first_active_model_s']:.2f}x faster)")
    if demo:
        print(f"goals (first page within 20 s, an active model within 90 s): "
              f"{'met' if demo['first_page_s'] <= 20 else 'missed'}, "
              f"{'met' if demo['first_active_model_s'] <= 90 else 'missed'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
