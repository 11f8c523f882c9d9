"""Debian's PostgreSQL, run privately by the test suite: never the system service.

:class:`PostgresServer` runs ``initdb`` into a fresh temporary directory and starts
``postgres`` in the foreground on a free loopback port, with its Unix socket in that same
directory, without fsync (a test database need not survive a power cut).  PostgreSQL refuses to
run as root, so under root it runs as the ``postgres`` user the Debian package creates.  Each
test asks for a database of its own (:meth:`new_database`); the server stops at the end of the
session and its directory is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.server import free_port

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


BIN_DIR = _bin_dir()
MISSING_REASON = (
    "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH;"
    " .ci/run installs the Debian package postgresql)"
)


def _fast_shutdown_with_parent() -> None:
    """preexec_fn: the server shuts down (SIGINT: fast shutdown) when the test run dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


class PostgresServer:
    def __init__(self) -> None:
        if BIN_DIR is None:
            raise RuntimeError(MISSING_REASON)
        self.dir = Path(tempfile.mkdtemp(prefix="chatserver-pg-"))
        self.port = free_port()
        self.user = "chat"
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        # Root may not run PostgreSQL: run it as the package's own user.
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        assert BIN_DIR is not None
        data = self.dir / "data"
        if not data.exists():
            subprocess.run(
                [
                    str(BIN_DIR / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                cwd=self.dir,
                **self._run_as,
            )
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(BIN_DIR / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            preexec_fn=_fast_shutdown_with_parent,
            **self._run_as,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def new_database(self) -> str:
        """A new, empty database; its dsn."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected); the data stays for :meth:`start`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
