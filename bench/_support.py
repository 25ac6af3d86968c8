"""What several benchmarks share: their throw-away PostgreSQL databases and the child processes they start.

Each benchmark owns a database it may drop and rebuild. The name guard lives here so no benchmark can be pointed
at a database it does not own and wipe it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit


def admin_url(url: str) -> str:
    """The same server's ``postgres`` database, from which ``url``'s database can be dropped and created."""
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def database_exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name(url)]).fetchone() is not None


def refuse_unless_owned(url: str, prefixes: Sequence[str]) -> str:
    """``url``'s database name, or SystemExit when it does not start with one of the benchmark's ``prefixes``."""
    name = db_name(url)
    # Besides the benchmark's own names, any name ending in "_bench" is a benchmark's database by convention (a
    # machine shared by several people gives each their own: sift_<name>_bench).
    if not name.startswith(tuple(prefixes)) and not name.endswith("_bench"):
        allowed = " or ".join(f"{p}*" for p in prefixes)
        raise SystemExit(f"refusing to drop {name!r}: this benchmark only rebuilds databases named {allowed} "
                         "or *_bench")
    return name


def recreate_database(url: str, prefixes: Sequence[str]) -> None:
    """Drop (forcing out any session) and create ``url``'s database, if its name is one the benchmark owns."""
    import psycopg

    name = refuse_unless_owned(url, prefixes)
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def stop_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send ``sig`` to the child's whole process group (a Celery or gunicorn parent and its children), then
    SIGKILL whatever is still there after ``timeout`` seconds. The child must have been started with
    ``start_new_session=True``, or this would signal the benchmark itself."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
