"""``python -m config.run_demo``: the whole demo system in the foreground, under a small supervisor.

Three children, all with SIFT_DEMO=1: the web app (gunicorn on 127.0.0.1:$PORT, default 8000), a real Celery
worker (every queue) and ``celery beat`` (the learning sweep, the retention and lease-release schedules). Run
``manage.py migrate`` and ``manage.py load_demo`` first (``make demo`` does all three).

What the supervisor promises:

- **The web app first.** The web app starts alone and loads the Django app once, before it forks its workers
  (gunicorn ``--preload``); the worker and beat start as soon as it answers. On two cores, four processes
  loading Django, NumPy and scikit-learn at once put seconds on the first page; the worker needs only a few
  seconds more to be ready for the first model (bench/demo_startup.py measures both).
- **It serves like production on PostgreSQL.** With ``DATABASE_URL`` set, gunicorn runs a worker process per core
  with 8 threads each (SQLite: 2 x 4, since its one write lock lets only one writer through at a time); see
  ``WEB_SQLITE`` and bench/demo_reviewers.py, which times 24 reviewers against it.
- **A dead child is restarted, not fatal.** Once the web app has answered, a child that exits is started again
  after a back-off (1 s, doubling to at most 30 s; back to 1 s once it has stayed up 60 s), and stderr says so.
  Killing the worker never takes the web app down. A child that cannot stay up (five exits in a row, each
  within 60 s of its start) stops the demo with status 1 rather than loop for ever. During start-up (before
  the web app first answers) an exit of the web app stops the demo at once: a taken port or a broken install
  should say so now, not be retried.
- **No child outlives the demo.** Each child is the leader of its own process group (``start_new_session``), so
  a terminal's Ctrl-C reaches only this process, which then stops the children in order: SIGTERM to each
  whole group (gunicorn's workers, anything a child forked), then SIGKILL to what is left after the grace
  period. A second Ctrl-C skips the grace period. If this process dies without cleaning up (SIGKILL, a crash),
  Linux signals every child (``PR_SET_PDEATHSIG``: SIGTERM for the web app and beat, SIGKILL for the
  worker, see _commands), and gunicorn's workers leave when their master does. Beat is a child of its own,
  not embedded in the worker (``-B``), where a killed worker would orphan it.
- **Nothing is written into the working tree.** Beat's schedule file is ``$SIFT_DATA_DIR/celerybeat-schedule``
  (``CELERY_BEAT_SCHEDULE_FILENAME`` in the settings), under ``var/`` by default.
- **The terminal shows what a user needs**: the URL, the users, where the password is, how to stop, and the
  supervisor's own notes (a restart, a failure). Each child's output (gunicorn's access log, the worker's and
  beat's logs) is appended to ``$SIFT_DATA_DIR/logs/<web|worker|beat>.log``; a child that fails during
  start-up has the end of its log printed with the failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "default,embedding,training,export"
STOP_GRACE_SECONDS = 15
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# A child that ran this long before exiting was healthy: its back-off starts again from the first step.
STABLE_SECONDS = 60.0
MAX_QUICK_EXITS = 5
POLL_SECONDS = 0.2
USERS = "admin, lead (policy lead), reviewer1, reviewer2 (reviewers), engineer (ML engineer)"
PR_SET_PDEATHSIG = 1
# Lines of a child's log printed when it fails during start-up.
LOG_TAIL_LINES = 20


def data_dir() -> Path:
    """var/ (or $SIFT_DATA_DIR), as config/settings.py has it; this module does not import the settings."""
    return Path(os.environ.get("SIFT_DATA_DIR", str(ROOT / "var")))


def log_dir() -> Path:
    """Where the children's output goes: ``$SIFT_DATA_DIR/logs``."""
    return data_dir() / "logs"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-16_384:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# How the web app serves. On SQLite every write takes the database's one write lock, so a few threads are all that
# can make progress at once. On PostgreSQL (DATABASE_URL set) writers only wait for the rows they share, so the demo
# serves as production would: a worker process per core and more threads each, enough for a team of reviewers at
# once (bench/demo_reviewers.py: 24 reviewers, overlap 2).
WEB_SQLITE = ("2", "4")
WEB_THREADS_POSTGRES = "8"


def _web_shape() -> tuple[str, str]:
    """(--workers, --threads) for gunicorn, by database (see WEB_SQLITE)."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return str(max(2, os.cpu_count() or 1)), WEB_THREADS_POSTGRES
    return WEB_SQLITE


def _commands(port: int) -> dict[str, tuple[list[str], int]]:
    """Each child's argv, and the signal it gets if this process dies without stopping it."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "config"]
    workers, threads = _web_shape()
    return {
        # SIGTERM: gunicorn stops its workers gracefully, and kills them after --graceful-timeout.
        # --preload: the master loads the app once and forks ready workers (one app load, not two at once).
        "web": ([python, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "--workers", workers,
                 "--threads", threads, "--graceful-timeout", "10", "--preload", "--access-logfile", "-"],
                signal.SIGTERM),
        # SIGKILL: on SIGTERM a solo worker first finishes its task (an embedding batch: tens of seconds), with
        # nobody left to cut that short; a worker is built to be killed (acks_late + reject_on_worker_lost, and
        # the sweep takes over a stale claim), and SIGQUIT in a solo pool dies with a traceback anyway.
        "worker": ([*celery, "worker", "-Q", QUEUES, "--concurrency", "1", "--pool", "solo", "--loglevel", "INFO"],
                   signal.SIGKILL),
        # Its schedule file comes from the settings (CELERY_BEAT_SCHEDULE_FILENAME, under $SIFT_DATA_DIR).
        "beat": ([*celery, "beat", "--loglevel", "INFO"], signal.SIGTERM),
    }


def _die_with_parent(parent: int, signum: int) -> Callable[[], None]:
    """A preexec_fn: the child gets ``signum`` when ``parent`` dies, however it dies (Linux only).

    Runs in the forked child before exec; the setting survives exec. If the parent died before the prctl took
    effect (the child was re-parented already), the child leaves at once instead of running unsupervised.
    """
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    argv: list[str]
    death_signal: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    backoff: float = BACKOFF_FIRST_SECONDS
    restart_at: float | None = None
    restarts: int = 0

    @property
    def log(self) -> Path:
        return log_dir() / f"{self.name}.log"

    def start(self, env: dict[str, str]) -> int:
        """Start (or restart) the child, its output appended to its log; returns its pid."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            # Fixed argv built in _commands from sys.executable; no shell, no user input.
            self.process = subprocess.Popen(  # noqa: S603
                self.argv, cwd=ROOT, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent(os.getpid(), self.death_signal))
        self.started_at = time.monotonic()
        if self.restart_at is not None:
            self.restarts += 1
        self.restart_at = None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the child's whole process group (its pid: it is a session leader), leftovers included.

        Called only for a child we started and have not yet reaped, or right after reaping it, so the group id
        is still ours: Linux does not hand out a pid while a process group of that id has members.
        """
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _say(message: str) -> None:
    print(f"run_demo: {message}", file=sys.stderr, flush=True)


def _password_hint() -> str:
    if os.environ.get("SIFT_DEMO_PASSWORD"):
        return "$SIFT_DEMO_PASSWORD"
    return f"the one load_demo printed (kept in {data_dir() / 'demo_password'})"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _stop(children: list[Child], *, grace: float = STOP_GRACE_SECONDS, urgent: Callable[[], bool]) -> None:
    """SIGTERM every child's group, wait up to ``grace`` (less once ``urgent()``), then SIGKILL what is left."""
    for child in children:
        if child.running():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(child.running() for child in children) and time.monotonic() < deadline and not urgent():
        time.sleep(0.1)
    for child in children:
        # Also for a child that has exited: a process it forked may still hold the group (and the port).
        child.signal_group(signal.SIGKILL)
        if child.process is not None:
            child.process.wait()


class Supervisor:
    def __init__(self, port: int) -> None:
        self.port = port
        self.env = {**os.environ, "SIFT_DEMO": "1", "PYTHONUNBUFFERED": "1"}
        self.children = [Child(name, argv, death) for name, (argv, death) in _commands(port).items()]
        self.signals: list[int] = []

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _reap(self, child: Child, *, serving: bool) -> int | None:
        """Handle an exited child: schedule its restart, or return the demo's exit status to give up with."""
        assert child.process is not None
        code = child.process.returncode
        uptime = time.monotonic() - child.started_at
        child.signal_group(signal.SIGKILL)  # whatever it left behind in its group
        if not serving:
            tail = _tail(child.log)
            _say(f"the {child.name} process {_describe(code)} during start-up; stopping. The end of {child.log}:"
                 + ("\n" + tail if tail else " (empty)"))
            return code or 1
        if uptime >= STABLE_SECONDS:
            child.quick_exits, child.backoff = 0, BACKOFF_FIRST_SECONDS
        child.quick_exits += 1
        if child.quick_exits >= MAX_QUICK_EXITS:
            _say(f"the {child.name} process {_describe(code)}; it exited {child.quick_exits} times in a row within "
                 f"{STABLE_SECONDS:.0f} s of starting, so the demo is stopping.")
            return 1
        delay = child.backoff
        child.backoff = min(child.backoff * 2, BACKOFF_MAX_SECONDS)
        child.restart_at = time.monotonic() + delay
        child.process = None
        _say(f"the {child.name} process {_describe(code)} after {uptime:.0f} s; restarting it in {delay:.0f} s.")
        return None

    def run(self) -> int:
        data_dir().mkdir(parents=True, exist_ok=True)
        web, *others = self.children
        web.start(self.env)
        serving = False
        try:
            while not self.signals:
                now = time.monotonic()
                for child in self.children:
                    if child.process is None:
                        if child.restart_at is not None and now >= child.restart_at:
                            _say(f"restarted the {child.name} process (pid {child.start(self.env)}; "
                                 f"restart {child.restarts}).")
                    elif child.process.poll() is not None:
                        status = self._reap(child, serving=serving)
                        if status is not None:
                            return status
                if not serving and _port_open(self.port):
                    serving = True
                    for child in others:
                        child.start(self.env)
                    print(f"\nSift demo running at http://127.0.0.1:{self.port}/  (API schema: /api/schema/)",
                          flush=True)
                    print(f"Users: {USERS}. Password: {_password_hint()}.", flush=True)
                    print(f"Logs of the web app, the worker and beat: {log_dir()}/", flush=True)
                    print("Press Ctrl-C to stop the web app, the worker and beat.\n", flush=True)
                time.sleep(POLL_SECONDS)
            _say(f"{signal.Signals(self.signals[0]).name}: stopping the web app, the worker and beat "
                 "(Ctrl-C again to stop them at once)...")
            return 0
        finally:
            _stop(self.children, urgent=lambda: len(self.signals) > 1)


def main() -> int:
    supervisor = Supervisor(int(os.environ.get("PORT", "8000")))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
