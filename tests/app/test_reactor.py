"""The reactor ``chatserver run`` installs: Twisted's epoll reactor without the per-event
logging context.  Every integration test runs the server on it; these check what it changes
on real sockets, and that ``chatserver run`` really uses it."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest
from twisted.internet.abstract import FileDescriptor

from chatserver.server import reactor as lean

pytestmark = pytest.mark.skipif(lean.EPollReactor is None, reason="epoll only")


class Reader(FileDescriptor):
    """A socket the reactor watches; ``boom`` makes its read raise."""

    def __init__(self, reactor: Any, sock: socket.socket, boom: bool = False) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.boom = boom
        self.got: list[bytes] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        data = self.sock.recv(4096)
        if self.boom:
            raise RuntimeError("broken handler")
        self.got.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)
        self.reactor.removeReader(self)


def test_a_failing_reader_costs_only_itself() -> None:
    reactor = lean.LeanEPollReactor()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        readers = [
            Reader(reactor, pairs[0][0]),
            Reader(reactor, pairs[1][0], boom=True),
            Reader(reactor, pairs[2][0]),
        ]
        for reader in readers:
            reactor.addReader(reader)
        for i, (_, writer) in enumerate(pairs):
            writer.send(b"line %d" % i)
        reactor.doIteration(0.5)
        assert readers[0].got == [b"line 0"]
        assert readers[2].got == [b"line 2"]
        # The reactor's own handling: the failing one is logged and disconnected.
        assert readers[1].got == [] and len(readers[1].lost) == 1
        assert readers[1].lost[0].check(RuntimeError)
        assert readers[1] not in reactor.getReaders()
        # The others stay watched and keep getting their input.
        pairs[2][1].send(b"more")
        reactor.doIteration(0.5)
        assert readers[2].got == [b"line 2", b"more"]
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        reactor._poller.close()


def test_chatserver_run_uses_it(make_server: Any) -> None:
    server = make_server(protocols=("irc",))
    deadline = time.monotonic() + 10
    while "ready server=" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert re.search(r"ready server=\S+ listeners=\d+ reactor=LeanEPollReactor\b", server.log())
    # And it serves: a registration round trip over a real socket.
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as sock:
        sock.sendall(b"NICK lean\r\nUSER lean 0 * :Lean\r\n")
        data = b""
        while b" 001 " not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
