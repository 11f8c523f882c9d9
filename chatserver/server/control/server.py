"""The control socket's listener and its line protocol (JSON lines, answered in order).

Bad input never reaches a handler and never harms the server: a line that is not a JSON
object, an unknown command or bad parameters get ``{"ok": false, "error": ...}`` and the
connection stays usable; a line longer than :data:`MAX_LINE_BYTES` gets that answer and the
connection is closed.  Every request that names a command is logged, with the peer's process
and user, and without passwords.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.core.errors import ChatError
from chatserver.server.control import MAX_LINE_BYTES, SOCKET_NAME
from chatserver.server.control.commands import CommandError, loggable, parse

if TYPE_CHECKING:
    from chatserver.server.app import ChatServer

log = Logger(namespace="chatserver.server.control")

_UCRED = struct.Struct("3i")  # pid, uid, gid (struct ucred)
# Requests of one connection handled in one reactor turn; the rest wait for the next turns.
REQUESTS_PER_TURN = 16
# Scripts may open many connections at once (one per command); the default of 50 refuses some.
CONTROL_BACKLOG = 1024


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


@implementer(IPushProducer)
class ControlProtocol(LineOnlyReceiver):
    """One operator's connection: requests are answered one at a time, in order."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE_BYTES

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.peer = "unknown peer"
        self._queue: deque[bytes] = deque()
        self._busy = False
        self._paused = False
        self._closing = False
        self._running = False
        self._reading = True
        self._later: Any = None

    def connectionMade(self) -> None:
        pid, uid = _peer_credentials(self.transport)
        self.peer = f"pid {pid} uid {uid}" if pid is not None else "unknown peer"
        # A peer that sends requests and never reads the answers: once its answers fill the
        # socket's buffer, requests are no longer read (nor answered) until it reads.
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        # The socket's mode already keeps others out; a peer of another user (root aside)
        # got in through a loosened mode or directory, and is refused all the same.
        if uid is not None and uid not in (os.getuid(), 0):
            log.warn("control: refused a connection from {peer}", peer=self.peer)
            self._answer({"ok": False, "error": "permission denied: not the server's user"})
            self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._queue.clear()
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            return
        self._queue.append(line)
        self._next()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer({"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"})
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._queue.clear()
        transport: Any = self.transport
        # A registered producer would hold the close back until it resumed.
        transport.unregisterProducer()
        transport.loseConnection()

    # -- IPushProducer: the transport says when the peer stops reading -----------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._set_reading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        self._closing = True
        self._queue.clear()

    def _set_reading(self) -> None:
        """Read the socket only while nothing waits: requests already read and not answered,
        or answers the peer has not read, hold the rest back (in the peer's socket)."""
        want = not (self._paused or self._queue or self._closing)
        if want != self._reading:
            self._reading = want
            transport: Any = self.transport
            if want:
                transport.resumeProducing()
            else:
                transport.pauseProducing()

    def _next(self) -> None:
        # A request answered at once comes back here through _done: the loop below goes on
        # with the next one rather than recursing once per request.
        if self._running:
            return
        self._running = True
        handled = 0
        try:
            while self._queue and not self._busy and not self._paused and not self._closing:
                if handled == REQUESTS_PER_TURN:
                    # The rest in a later turn: a script's burst must not hold up the chat.
                    if self._later is None:
                        self._later = self.server.reactor.callLater(0, self._turn)
                    break
                line = self._queue.popleft()
                if not line.strip():
                    continue
                handled += 1
                self._busy = True
                d = defer.maybeDeferred(self._handle, line)
                d.addErrback(self._failed)
                d.addCallback(self._done)
        finally:
            self._running = False
        self._set_reading()

    def _turn(self) -> None:
        self._later = None
        self._next()

    def _done(self, answer: dict[str, Any]) -> None:
        self._answer(answer)
        self._busy = False
        self._next()

    def _handle(self, line: bytes) -> Any:
        try:
            request = json.loads(line)
        except ValueError as err:
            raise CommandError(f"not JSON: {err}") from None
        if not isinstance(request, dict):
            raise CommandError('a request is a JSON object, such as {"cmd": "who"}')
        found, args = parse(request)
        emit = log.info if found.acts else log.debug
        emit(
            "control: {command}{args} (from {peer})",
            command=found.name,
            args=loggable(found, args),
            peer=self.peer,
        )
        d = defer.maybeDeferred(found.handler, self.server, args)
        return d.addCallback(lambda fields: {"ok": True, **(fields or {})})

    def _failed(self, failure: Failure) -> dict[str, Any]:
        if failure.check(CommandError, ChatError):
            return {"ok": False, "error": str(failure.value)}
        log.failure("control: a command failed", failure)
        return {"ok": False, "error": f"internal error: {failure.value!r}"}

    def _answer(self, answer: dict[str, Any]) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")


class ControlFactory(Factory):
    # Its start and stop are the "listening" line and the server's own stop: no chatter.
    noisy = False

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self.server)


def _peer_credentials(transport: Any) -> tuple[int | None, int | None]:
    sock = getattr(transport, "socket", None)
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None, None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None, None
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


def listen(reactor: Any, server: ChatServer) -> IListeningPort:
    """Listen on the data directory's control socket, mode 0600.

    Called with the data directory's lock held: a socket file found there is a crashed
    server's, and is replaced.
    """
    path = socket_path(server.config.data_dir)
    if path.is_socket():
        path.unlink()
    # Made owner-only from the start (the mode chmod'ed after bind would leave a moment).
    old_umask = os.umask(0o177)
    try:
        port = reactor.listenUNIX(
            str(path), ControlFactory(server), mode=0o600, backlog=CONTROL_BACKLOG
        )
    finally:
        os.umask(old_umask)
    log.info("control socket {path} (chatserver admin)", path=str(path))
    return port
