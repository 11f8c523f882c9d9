"""The serving process's side of the SQLite history writer (:mod:`chatserver.storage.writer`).

:class:`WriterLink` starts the writer, sends it batches and fires each batch's Deferred with
its acknowledgement.  It keeps every batch until it is acknowledged: when the writer dies, a new
one is started and gets them all again, in order (the tables' unique ids make a batch written
twice count once).  ``settled()`` says when everything sent so far is acknowledged, which the
store waits for before each of its other operations, so that they keep the order of the calls
as they had with one thread: a history query sees every message sent before it.
"""

from __future__ import annotations

import builtins
import fcntl
import marshal
import os
import sqlite3
import sys
from collections import deque
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.storage.writer import HEADER, frame

log = Logger()

# A writer that ends sooner than this after its start, having acknowledged nothing, is
# started again only after it: one that cannot run must not be restarted in a busy loop.
RESTART_DELAY = 1.0
# Bytes the pipe to the writer holds (Linux caps it at /proc/sys/fs/pipe-max-size): a big
# batch then crosses in fewer writes, each a wake-up of both processes.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class WriterFailed(Exception):
    """A batch not written because no writer could write it (it stopped, or ended at once):
    for the store, a failing database."""


def _error(report: tuple[str, str, int]) -> Exception:
    """The exception a writer's report stands for, of the class the thread would have
    raised (SQLite's own, or a built-in one such as ValueError for a bad record), so that
    the store and its callers treat it alike."""
    name, message, code = report
    cls = getattr(sqlite3, name, None) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return WriterFailed(f"{name}: {message}")
    err = cls(message)
    if isinstance(err, sqlite3.Error):
        err.sqlite_errorcode = code
    return err


class WriterLink(protocol.ProcessProtocol):
    """One writer process at a time for the database at ``path``."""

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._seq = 0
        # (seq, frame, Deferred) of each batch sent and not yet acknowledged, oldest first.
        self._unacked: deque[tuple[int, bytes, Deferred[int]]] = deque()
        # (seq, Deferred) of each settled() call waiting for that batch's acknowledgement.
        self._waiters: deque[tuple[int, Deferred[None]]] = deque()
        self._buffer = b""
        self._running = False
        self._closing = False
        self._closed: Deferred[None] | None = None
        self._started_at = 0.0
        # Whether the running writer has acknowledged a batch.
        self._acked = False
        self._restart: Any = None
        # The running writer's process transport (Twisted's Process: pipes, closeStdin).
        self._process: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._restart = None
        self._buffer = b""
        self._started_at = self._reactor.seconds()
        self._acked = False
        self._reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-m", "chatserver.storage.writer", self.path],
            env=os.environ.copy(),
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    def connectionMade(self) -> None:
        # Called from within spawnProcess, before it returns the same transport.
        self._process = self.transport
        self._running = True
        fd = self._process.pipes[0].fileno()
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller limit: the default pipe size works, in more writes
        for _, data, _ in self._unacked:
            self._process.write(data)

    def stop(self) -> Deferred[None]:
        """Let the writer write what it was sent and exit; fires once it has."""
        if self._closed is None:
            self._closing = True
            self._closed = Deferred()
            if self._restart is not None and self._restart.active():
                self._restart.cancel()
            if self._running:
                self._process.closeStdin()
            else:
                self._fail_all(Failure(error.ProcessDone(None)))
                self._closed.callback(None)
        return self._closed

    def processEnded(self, reason: Failure) -> None:
        self._running = False
        if self._closing:
            # Whatever the writer did not acknowledge before it exited is not known to be
            # written: its callers learn that it failed.
            self._fail_all(reason)
            if self._closed is not None and not self._closed.called:
                self._closed.callback(None)
            return
        if self._acked or self._reactor.seconds() - self._started_at >= RESTART_DELAY:
            log.warn(
                "SQLite history writer for {path} ended ({reason}); starting another, which"
                " gets the {n} unacknowledged batches again",
                path=self.path,
                reason=reason.getErrorMessage(),
                n=len(self._unacked),
            )
            self._restart = self._reactor.callLater(0, self.start)
            return
        # Ended as soon as it started, having written nothing: it may never run (a broken
        # installation, a batch that kills it).  Its batches fail, so that history
        # waits and is retried as for a database that fails (with its bound on what may
        # wait), and the next writer is tried a little later.
        log.error(
            "SQLite history writer for {path} ended at once ({reason}); trying again in"
            " {delay:g} s",
            path=self.path,
            reason=reason.getErrorMessage(),
            delay=RESTART_DELAY,
        )
        self._fail_all(reason)
        self._restart = self._reactor.callLater(RESTART_DELAY, self.start)

    def _fail_all(self, reason: Failure) -> None:
        while self._unacked:
            _, _, d = self._unacked.popleft()
            d.errback(WriterFailed(f"the history writer ended: {reason.getErrorMessage()}"))
        self._wake(self._seq)

    # -- batches --------------------------------------------------------------------------

    def send(self, kind: int, rows: list[Any]) -> Deferred[int]:
        """Send one batch; fires with how many rows were new once the writer committed it."""
        if self._closing:
            return defer.fail(WriterFailed("the history writer is stopping"))
        self._seq += 1
        data = frame((self._seq, kind, rows))
        d: Deferred[int] = Deferred()
        self._unacked.append((self._seq, data, d))
        if self._running:
            self._process.write(data)
        return d

    def settled(self) -> Deferred[None]:
        """Fires once every batch sent so far is acknowledged (or failed)."""
        if not self._unacked:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((self._seq, d))
        return d

    def outReceived(self, data: bytes) -> None:
        buffer = self._buffer + data
        offset = 0
        size = HEADER.size
        while len(buffer) - offset >= size:
            (length,) = HEADER.unpack_from(buffer, offset)
            if len(buffer) - offset - size < length:
                break
            seq, stored, report = marshal.loads(buffer[offset + size : offset + size + length])
            offset += size + length
            self._acknowledged(seq, stored, report)
        self._buffer = buffer[offset:]

    def _acknowledged(self, seq: int, stored: int, report: Any) -> None:
        # Acknowledgements come in the order of the batches, each once: a batch is sent
        # again only to a new writer, once the one that had it is gone.
        self._acked = True
        if self._unacked and self._unacked[0][0] == seq:
            d = self._unacked.popleft()[2]
            if report is None:
                d.callback(stored)
            else:
                d.errback(_error(report))
        self._wake(seq)

    def _wake(self, seq: int) -> None:
        while self._waiters and self._waiters[0][0] <= seq:
            self._waiters.popleft()[1].callback(None)

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("SQLite history writer: {line}", line=line)
