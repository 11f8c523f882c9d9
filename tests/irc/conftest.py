"""Fixtures for IRC protocol tests: real ChatService, in-memory store, fake clock, StringTransport.

Fixtures
--------
``irc``      an :class:`IrcWorld` with flood control off (``flood_burst=0``) and passwords
             accepted over plaintext (``plaintext_passwords=True``: clients come from
             192.0.2.N without TLS; test_plaintext_passwords.py tests the refusal).  Its parts:
             ``irc.service`` (a started ChatService on ``tests.support.memstore.MemoryStore``;
             password hashing runs synchronously), ``irc.store``, ``irc.clock``
             (``twisted.internet.task.Clock``: ``irc.clock.advance(s)``), ``irc.factory``.
``make_irc`` ``make_irc(settings=CoreSettings(...), config=IrcConfig(...), operators=(...))``
             for a world with other settings (e.g. flood control on).
``make_server`` the shared real-server fixture, its directory made first: integration tests
             use ``make_server(protocols=("line", "irc"))`` and ``LineClient(server.ports["irc"])``.

An :class:`IrcWorld` makes clients:

``irc.connect(address="192.0.2.N")``   a connected, unregistered :class:`Client`
                                       (``tls=True``: over a transport that is TLS)
``irc.client("alice", caps=("echo-message",))``   connected and registered; output so far dropped

A :class:`Client`:

``c.send("JOIN #a", "PART #a")``   feed lines (CRLF added); ``c.feed(b"raw bytes")`` as they are
``c.take()``        what the server wrote since the last take, parsed (``IrcMessage`` list)
``c.ask(line)``     drop pending output, send ``line``, return the reply (``take()``)
``c.lines()``       like take() but the raw text lines
``c.closed``        the server closed (or is closing) the connection; ``c.lose()`` simulates the
                    client going away.  When the server closes, ``connectionLost`` runs at once.
``c.conn``          the ``IrcConnection``; ``c.user`` the core user

Helpers: ``commands(msgs)``, ``find(msgs, command)`` (all with that command),
``one(msgs, command)`` (exactly one), ``last_param(msg)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.config import IrcConfig, ServerConfig
from chatserver.core.settings import CoreSettings
from protocols.irc.connection import IrcConnection
from protocols.irc.factory import IrcFactory
from protocols.irc.message import IrcMessage, parse
from tests.support.memstore import MemoryStore, make_service

SERVER_NAME = "irc.test"
NETWORK = "TestNet"


@implementer(ISSLTransport)
class TlsStringTransport(StringTransport):
    """A StringTransport that is TLS as far as the connection can tell: Twisted's TLS
    transports provide ISSLTransport, which is what ``IrcConnection.tls`` looks at."""

    def getPeerCertificate(self) -> None:
        return None


class Client:
    """One IRC client over a StringTransport (``tls=True``: a TlsStringTransport)."""

    def __init__(self, world: IrcWorld, address: str, *, tls: bool = False) -> None:
        self.world = world
        self.conn: IrcConnection = world.factory.buildProtocol(None)
        transport = TlsStringTransport if tls else StringTransport
        self.transport = transport(peerAddress=IPv4Address("TCP", address, 40000))
        self.conn.makeConnection(self.transport)
        self._check_closed()

    # -- input --------------------------------------------------------------------------------

    def send(self, *lines: str) -> None:
        for line in lines:
            self.feed(line.encode("utf-8") + b"\r\n")

    def feed(self, data: bytes) -> None:
        self.conn.dataReceived(data)
        self._check_closed()

    # -- output -------------------------------------------------------------------------------

    def raw(self) -> bytes:
        """Bytes written since the last take (and forget them)."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        return [ln.decode("utf-8") for ln in self.raw().split(b"\r\n") if ln]

    def take(self) -> list[IrcMessage]:
        return [
            parse(ln, max_body=1 << 20, max_tags=1 << 20) for ln in self.raw().split(b"\r\n") if ln
        ]

    def ask(self, line: str) -> list[IrcMessage]:
        self.take()
        self.send(line)
        return self.take()

    def register(self, nick: str, *, caps: Iterable[str] = (), realname: str = "Real Name") -> None:
        caps = tuple(caps)
        if caps:
            self.send("CAP LS 302", "CAP REQ :" + " ".join(caps))
        self.send(f"NICK {nick}", f"USER {nick.lower()} 0 * :{realname}")
        if caps:
            self.send("CAP END")
        out = self.take()
        assert any(m.command == "001" for m in out), f"registration failed: {out}"

    # -- state --------------------------------------------------------------------------------

    @property
    def user(self) -> Any:
        return self.conn.user

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self, reason: str = "connection lost") -> None:
        """The client goes away."""
        if not self.conn._lost:
            self.transport.disconnecting = True
            self.conn.connectionLost(Failure(ConnectionError(reason)))

    def _check_closed(self) -> None:
        # StringTransport never calls connectionLost: do it when the server closes.
        if self.transport.disconnecting and not self.conn._lost:
            self.conn.connectionLost(Failure(ConnectionError("closed by server")))


class IrcWorld:
    """One chat service and one IRC factory, and the clients made on them."""

    def __init__(
        self,
        *,
        settings: CoreSettings | None = None,
        config: IrcConfig | None = None,
        operators: tuple[Any, ...] = (),
        server: ServerConfig | None = None,
    ) -> None:
        self.store = MemoryStore()
        self.settings = settings or CoreSettings(
            server_name=SERVER_NAME, scram_iterations=4096, history_flush_interval=0
        )
        self.service = make_service(self.settings, store=self.store)
        self.clock = self.service.clock
        self.config = config or IrcConfig(flood_burst=0, plaintext_passwords=True)
        self.server = server or ServerConfig(
            name=SERVER_NAME, network=NETWORK, description="A test server"
        )
        self.factory = IrcFactory(self.service, self.config, self.server, operators=operators)
        self._addresses = 0
        self.clients: list[Client] = []

    def connect(self, address: str | None = None, *, tls: bool = False) -> Client:
        self._addresses += 1
        client = Client(self, address or f"192.0.2.{self._addresses}", tls=tls)
        self.clients.append(client)
        return client

    def client(self, nick: str, **kwargs: Any) -> Client:
        client = self.connect(kwargs.pop("address", None), tls=kwargs.pop("tls", False))
        client.register(nick, **kwargs)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.lose()


@pytest.fixture
def make_server(make_server: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    """The shared real-server fixture (tests/conftest.py), with the server's directory made
    first (ServerProcess writes its config into ``tmp_path / "s<n>"`` without creating it)."""
    made = 0

    def make(**kwargs: Any) -> Any:
        nonlocal made
        (tmp_path / f"s{made}").mkdir(parents=True, exist_ok=True)
        made += 1
        return make_server(**kwargs)

    return make


@pytest.fixture
def irc() -> Iterator[IrcWorld]:
    world = IrcWorld()
    yield world
    world.close()


@pytest.fixture
def make_irc() -> Iterator[Any]:
    worlds: list[IrcWorld] = []

    def make(**kwargs: Any) -> IrcWorld:
        world = IrcWorld(**kwargs)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


def commands(messages: Iterable[IrcMessage]) -> list[str]:
    return [m.command for m in messages]


def find(messages: Iterable[IrcMessage], command: str) -> list[IrcMessage]:
    return [m for m in messages if m.command == command]


def one(messages: Iterable[IrcMessage], command: str) -> IrcMessage:
    found = find(messages, command)
    assert len(found) == 1, f"expected one {command}, got {list(messages)}"
    return found[0]


def cap_ls(messages: Iterable[IrcMessage]) -> str:
    """The capabilities of a whole CAP LS reply, which CAP LS 302 may spread over lines."""
    ls = [m for m in find(messages, "CAP") if m.params[1] == "LS"]
    assert ls and all(m.params[2] == "*" for m in ls[:-1]) and ls[-1].params[2] != "*", ls
    return " ".join(m.params[-1] for m in ls)


def last_param(msg: IrcMessage) -> str:
    return msg.params[-1] if msg.params else ""
