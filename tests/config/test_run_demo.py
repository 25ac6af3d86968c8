"""config/run_demo.py with real processes: a killed worker is restarted, and no child outlives the demo.

The demo runs as ``make demo`` runs it with no DATABASE_URL/REDIS_URL: SQLite and the file-system broker, in a
temporary data directory. Nothing here sleeps as proof: every wait polls for the awaited state with a deadline.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 120.0

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG")]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of ``pid`` from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


Proc = tuple[int, int]  # (pid, start time): a pid alone could be reused


def descendants(root: int) -> set[Proc]:
    """Every living process below ``root``, identified by (pid, start time)."""
    parents: dict[int, list[Proc]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None and info[0] not in "ZX":
            parents.setdefault(info[1], []).append((int(entry.name), info[2]))
    found: set[Proc] = set()
    todo = [root]
    while todo:
        for proc in parents.get(todo.pop(), []):
            found.add(proc)
            todo.append(proc[0])
    return found


def alive(proc: Proc) -> bool:
    info = _stat(proc[0])
    return info is not None and info[2] == proc[1] and info[0] not in "ZX"  # a zombie has exited


def wait_for(what: str, condition: Callable[[], object], timeout: float = DEADLINE_SECONDS,
             supervisor: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``condition`` until it holds; fail at the deadline, or at once if ``supervisor`` has exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if supervisor is not None and supervisor.poll() is not None:
            raise AssertionError(f"the demo exited with status {supervisor.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    for port in range(8731, 8800):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 8731-8799")


def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Location") or ""
    finally:
        connection.close()


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    data_dir: Path
    seen: set[Proc]

    def output(self) -> str:
        """What the supervisor printed (the terminal's view)."""
        return self.log.read_text(errors="replace")

    def logs(self) -> str:
        """The children's output: $SIFT_DATA_DIR/logs/{web,worker,beat}.log."""
        return "".join(path.read_text(errors="replace") for path in sorted((self.data_dir / "logs").glob("*.log")))

    def children(self) -> dict[str, int]:
        """The supervisor's direct children by role: web, worker, beat."""
        roles = {"gunicorn": "web", "celery -A config worker": "worker", "celery -A config beat": "beat"}
        found = {}
        for pid, _start in descendants(self.process.pid):
            info = _stat(pid)
            if info is not None and info[1] == self.process.pid:
                command = _cmdline(pid)
                found.update({role: pid for marker, role in roles.items() if marker in command})
        return found

    def remember(self) -> set[Proc]:
        """Every process below the supervisor now; kept for the final clean-up too."""
        now = descendants(self.process.pid)
        self.seen |= now
        return now

    def ready(self, workers: int = 1) -> bool:
        logs = self.logs()
        return ("Sift demo running at" in self.output() and logs.count(" ready.") >= workers
                and "beat: Starting..." in logs)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    # make demo with no DATABASE_URL/REDIS_URL: SQLite and the file-system broker, here in a temporary directory.
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"} and not k.startswith("PYTEST")}
    port = free_port()
    env.update({"SIFT_DEMO": "1", "SIFT_DATA_DIR": str(tmp_path / "var"), "PORT": str(port),
                "SIFT_DEMO_PASSWORD": "demo-test-password", "HF_HUB_OFFLINE": "1"})
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "config.run_demo"], cwd=ROOT, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    running = Demo(process=process, port=port, log=log, data_dir=tmp_path / "var", seen=set())
    try:
        wait_for("the demo to start (web answering, worker ready, beat started)", running.ready,
                 supervisor=process)
        running.remember()
        yield running
    finally:
        # Whatever the test did: nothing it started may survive it.
        if process.poll() is None:
            running.remember()
            process.kill()
        process.wait()
        for pid, start in running.seen:
            if alive((pid, start)):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_restarted_while_the_web_app_keeps_answering_and_sigterm_stops_every_child(
        demo: Demo) -> None:
    first = demo.children()
    assert set(first) == {"web", "worker", "beat"}
    assert get(demo.port, "/") == (302, "/login/?next=/")

    os.kill(first["worker"], signal.SIGKILL)

    wait_for("a new worker", lambda: demo.children().get("worker") not in {None, first["worker"]},
             supervisor=demo.process)
    assert get(demo.port, "/") == (302, "/login/?next=/")
    wait_for("the new worker to be ready", lambda: demo.ready(workers=2), supervisor=demo.process)
    after = demo.children()
    assert (after["web"], after["beat"]) == (first["web"], first["beat"])  # nothing else was restarted
    assert demo.process.poll() is None
    out = demo.output()
    assert "run_demo: the worker process was killed by SIGKILL after " in out
    assert "; restarting it in 1 s." in out
    assert f"run_demo: restarted the worker process (pid {after['worker']}; restart 1)." in out
    assert get(demo.port, "/") == (302, "/login/?next=/")
    tree = demo.remember()
    # The web app's own workers are in the tree too: the group signal must reach them.
    assert len([pid for pid, _ in tree if "gunicorn" in _cmdline(pid)]) == 3

    demo.process.send_signal(signal.SIGTERM)

    assert demo.process.wait(timeout=60) == 0
    wait_for("every child to be gone", lambda: not any(alive(proc) for proc in demo.seen), timeout=10)
    assert "run_demo: SIGTERM: stopping the web app, the worker and beat" in demo.output()
    # The terminal shows the banner and the supervisor's notes; the children's chatter is in their logs.
    out = demo.output()
    assert f"Logs of the web app, the worker and beat: {demo.data_dir / 'logs'}/" in out
    assert '"GET / HTTP/1.1" 302' not in out and " ready." not in out and "beat: Starting..." not in out
    assert '"GET / HTTP/1.1" 302' in (demo.data_dir / "logs" / "web.log").read_text()
    # Beat kept its schedule under the data directory, not in the working tree.
    assert sorted(p.name for p in demo.data_dir.glob("celerybeat-schedule*")) != []
    assert sorted(p.name for p in ROOT.glob("celerybeat-schedule*")) == []


def test_every_child_exits_when_the_supervisor_is_killed(demo: Demo) -> None:
    tree = demo.remember()
    assert set(demo.children()) == {"web", "worker", "beat"}
    assert len(tree) == 5  # gunicorn master + 2 workers, the worker, beat

    demo.process.kill()  # SIGKILL: the supervisor gets no chance to clean up
    demo.process.wait()

    wait_for("every child to exit after the supervisor's death", lambda: not any(alive(proc) for proc in tree),
             timeout=60)
    with pytest.raises(OSError):
        get(demo.port, "/")
