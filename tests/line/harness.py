"""Line connections over StringTransport, on a real ChatService with a fake clock."""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from chatserver.config import LineConfig
from chatserver.core.accounts import AccountManager
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from chatserver.core.users import Connection, User
from protocols.line.connection import LineConnection
from protocols.line.factory import LineFactory
from tests.support.memstore import MemoryStore, run_now

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class Client:
    """One line connection, with helpers to send and to read what it was sent."""

    def __init__(self, world: World, host: str) -> None:
        self.world = world
        self.transport = StringTransportWithDisconnection(
            peerAddress=IPv4Address("TCP", host, 40000 + len(world.clients))
        )
        self.proto: LineConnection = world.factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = cast(Any, self.proto)
        self.proto.makeConnection(self.transport)

    def send(self, line: str) -> None:
        self.proto.dataReceived(line.encode() + b"\r\n")

    def raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        """The text lines written since the last read (CRLF endings checked and removed)."""
        data = self.take().decode("utf-8")
        if not data:
            return []
        assert data.endswith("\r\n"), data
        return data[:-2].split("\r\n")

    def objs(self) -> list[dict[str, Any]]:
        data = self.take().decode("utf-8")
        assert data == "" or data.endswith("\n"), data
        return [json.loads(line) for line in data.splitlines()]

    def one(self, **match: Any) -> dict[str, Any]:
        """The single JSON object among those written that has the given fields."""
        found = [o for o in self.objs() if all(o.get(k) == v for k, v in match.items())]
        assert len(found) == 1, found
        return found[0]

    @property
    def session(self) -> Connection:
        return self.proto.session

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def close(self) -> None:
        self.transport.loseConnection()


class World:
    """A service, a clock and a line factory; ``connect()`` makes clients."""

    def __init__(self, line: LineConfig | None = None, **core: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore()
        core.setdefault("history_flush_interval", 0)
        core.setdefault("server_name", "test.chat")
        self.settings = CoreSettings(**core)
        self.accounts = AccountManager(
            self.store, self.settings, clock=self.clock, run_in_thread=run_now
        )
        self.service = ChatService(
            self.settings,
            clock=self.clock,
            accounts=self.accounts,
            room_store=self.store,
            history_store=self.store,
        )
        self.service.start()
        # Clients here come from 192.0.2.x over plaintext: let them send passwords anyway,
        # as most tests log in (tests of the refusal pass their own LineConfig).
        self.line = line or LineConfig(plaintext_passwords=True)
        self.factory = LineFactory(self.service, self.line)
        self.clients: list[Client] = []

    def connect(self, host: str = "192.0.2.10") -> Client:
        client = Client(self, host)
        self.clients.append(client)
        return client

    def user(self, nick: str, *rooms: str, host: str = "192.0.2.10") -> Client:
        """A client with ``nick`` in ``rooms`` (the last current).

        Every client's output so far is cleared, so that tests see only what follows.
        """
        client = self.connect(host)
        client.send(nick)
        for room in rooms:
            client.send(f"/join {room}")
        for each in self.clients:
            each.take()
        return client

    def find(self, nick: str) -> User:
        user = self.service.find_user(nick)
        assert user is not None, nick
        return user
