"""scripts/with_services.py, which `make test` runs pytest under: given URLs are used as they are; missing ones get
private servers that are gone when the command ends, however it ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "with_services.py"

# Run under the private servers: reports what it sees and proves both answer (PostgreSQL as a superuser).
PROBE = """
import json, os, shutil, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
print(json.dumps({"database_url": os.environ["DATABASE_URL"], "redis_url": os.environ["REDIS_URL"],
                  "superuser": superuser, "redis_ping": redis.Redis.from_url(os.environ["REDIS_URL"]).ping(),
                  "redis_server": shutil.which("redis-server")}))
"""


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"} and not k.startswith("PYTEST")}
    env.update(overrides)
    return env


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 0)) == 0


def test_given_urls_are_used_as_they_are_and_the_command_status_is_returned() -> None:
    given = {"DATABASE_URL": "postgres://someone@db.invalid:5/x", "REDIS_URL": "redis://cache.invalid:6/1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--", sys.executable, "-c",
         "import os, sys; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL']); sys.exit(7)"],
        env=_env(**given), capture_output=True, text=True, timeout=60)
    assert result.returncode == 7
    assert result.stdout.split() == [given["DATABASE_URL"], given["REDIS_URL"]]
    assert "private" not in result.stderr


def test_missing_urls_get_private_servers_that_are_gone_after_the_run() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--", sys.executable, "-c", PROBE],
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["database_url"].startswith("postgres://postgres@127.0.0.1:")
    assert seen["redis_url"].startswith("redis://127.0.0.1:")
    assert (seen["superuser"], seen["redis_ping"]) == (True, True)
    assert seen["redis_server"] and "sift-test-services-" in seen["redis_server"]  # the soak's, ours too
    assert not _listening(seen["database_url"])
    assert not _listening(seen["redis_url"])
    assert not Path(seen["redis_server"]).parent.parent.exists()  # the servers' folder is deleted


def test_sigterm_stops_the_command_and_both_servers() -> None:
    command = "import os, sys, time; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL'], flush=True); " \
              "time.sleep(120)"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--", sys.executable, "-c", command],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        database_url, redis_url = proc.stdout.readline().split()
        assert _listening(database_url) and _listening(redis_url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while (_listening(database_url) or _listening(redis_url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _listening(database_url)
    assert not _listening(redis_url)
