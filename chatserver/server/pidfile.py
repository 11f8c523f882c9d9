"""The pid file in the data directory, locked for as long as a server uses that directory.

The lock (``flock``), not the file's existence, says whether a server runs: the kernel drops it
when the process ends however it ends (even SIGKILL), so a stale file after a crash never blocks
a start or a restore.  The file holds the pid for people and scripts (``kill -HUP $(cat ...)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

PID_FILE = "chatserver.pid"


class AlreadyRunning(Exception):
    """Another process holds the lock; ``pid`` is what its pid file says (0: unknown)."""

    def __init__(self, path: Path, pid: int) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by a running chatserver ({who})")


class PidFile:
    """Hold the lock on ``data_dir/chatserver.pid`` from :meth:`acquire` to :meth:`release`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / PID_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid; raises AlreadyRunning (or OSError)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Emptied rather than removed: removing a lock file races with a new server that
        # has just opened (and is about to lock) the same path.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def running_pid(data_dir: Path) -> int | None:
    """The pid of the server using ``data_dir`` (0 if it is unknown), or None if none runs."""
    path = Path(data_dir) / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isascii() and text.isdigit() else 0
