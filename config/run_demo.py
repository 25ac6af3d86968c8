"""``python -m config.run_demo``: the whole demo system in the foreground.

Starts a real Celery worker (every queue) and the web app (gunicorn on 127.0.0.1:$PORT,
default 8000), both with SIFT_DEMO=1, prints the URL and the users, and waits. Ctrl-C or
SIGTERM is forwarded to both; when either process dies the other is stopped too, and this
exits with the dead one's status. Run ``manage.py migrate`` and ``manage.py load_demo`` first
(``make demo`` does all three).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "default,embedding,training,export"
STOP_GRACE_SECONDS = 15
USERS = "admin, lead (policy lead), reviewer1, reviewer2 (reviewers), engineer (ML engineer)"


def settings_data_dir() -> Path:
    """var/ (or $SIFT_DATA_DIR): beat's schedule file belongs there, not in the working tree."""
    return Path(os.environ.get("SIFT_DATA_DIR", Path(__file__).resolve().parent.parent / "var"))


def _commands(port: int) -> dict[str, list[str]]:
    python = sys.executable
    return {
        # -B embeds celery beat: the learning sweep re-enqueues any retrain whose signal was lost.
        "worker": [python, "-m", "celery", "-A", "config", "worker", "-B", "-Q", QUEUES, "--concurrency", "1",
                   "--pool", "solo", "--loglevel", "INFO",
                   "--schedule", str(settings_data_dir() / "celerybeat-schedule")],
        "web": [python, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "2",
                "--threads", "4", "--access-logfile", "-"],
    }


def _password_hint() -> str:
    if os.environ.get("SIFT_DEMO_PASSWORD"):
        return "$SIFT_DEMO_PASSWORD"
    data_dir = Path(os.environ.get("SIFT_DATA_DIR", str(ROOT / "var")))
    return f"the one load_demo printed (kept in {data_dir / 'demo_password'})"


def _wait_for_port(port: int, processes: dict[str, subprocess.Popen[bytes]], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes.values()):
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    env = {**os.environ, "SIFT_DEMO": "1", "PYTHONUNBUFFERED": "1"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stopping = {"signal": 0}

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    # Each child gets its own session, so a terminal's Ctrl-C reaches only us and we stop both
    # in order; without this gunicorn and celery would each see SIGINT and race us.
    for name, command in _commands(port).items():
        # Fixed argv built above from sys.executable; no shell, no user input.
        processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
    try:
        if _wait_for_port(port, processes):
            print(f"\nSift demo running at http://127.0.0.1:{port}/  (API schema: /api/schema/)", flush=True)
            print(f"Users: {USERS}. Password: {_password_hint()}.", flush=True)
            print("Press Ctrl-C to stop the web app and the worker.\n", flush=True)
        while not stopping["signal"]:
            dead = {name: process.returncode for name, process in processes.items() if process.poll() is not None}
            if dead:
                for name, code in dead.items():
                    print(f"run_demo: the {name} process exited with status {code}; stopping.", file=sys.stderr)
                _stop(processes)
                return next(iter(dead.values())) or 1
            time.sleep(0.5)
        print("\nrun_demo: stopping the web app and the worker...", file=sys.stderr, flush=True)
        _stop(processes)
        return 0
    finally:
        _stop(processes)


if __name__ == "__main__":
    sys.exit(main())
