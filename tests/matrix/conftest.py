"""One real server for the whole matrix (line chat, IRC and XMPP), and the cast that uses it.

``world`` (package scope) starts ``chatserver run`` once, with flood control out of the way,
and makes clients on demand: ``world.irc(nick)``, ``world.irc_pkg(nick)``,
``world.line(nick)`` / ``world.line(nick, json_mode=False)``, ``world.xmpp(account)`` (the
account is registered first, from line chat).  ``world.cast`` holds the long-lived clients
that the event matrix reuses scenario after scenario; ``world.room()`` and
``world.nick(prefix)`` give names nobody has used yet.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.matrix.clients import IrcPeer, IrcPkgPeer, LinePeer, Peer, XmppPeer
from tests.support.server import ServerProcess

PASSWORD = "matrix-secret"
ENFORCE_SECONDS = 2

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class World:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.ports = server.ports
        self.peers: list[Peer] = []
        self.accounts: set[str] = set()
        self._rooms = itertools.count(1)
        self._nicks = itertools.count(1)
        self.cast: dict[str, Peer] = {}

    def room(self, prefix: str = "m") -> str:
        return f"{prefix}{next(self._rooms)}"

    def nick(self, prefix: str) -> str:
        return f"{prefix}{next(self._nicks)}"

    def _keep(self, peer: Any) -> Any:
        self.peers.append(peer)
        return peer

    def irc(self, nick: str, **kwargs: Any) -> IrcPeer:
        return self._keep(IrcPeer(self.ports["irc"], nick, **kwargs))

    def irc_pkg(self, nick: str) -> IrcPkgPeer:
        return self._keep(IrcPkgPeer(self.ports["irc"], nick))

    def line(self, nick: str, *, json_mode: bool = True, password: str | None = None) -> LinePeer:
        return self._keep(
            LinePeer(self.ports["line"], nick, json_mode=json_mode, password=password)
        )

    def register(self, name: str, password: str = PASSWORD) -> None:
        """Register an account from line chat (the quickest client), then leave."""
        if name in self.accounts:
            return
        peer = LinePeer(self.ports["line"], name)
        try:
            peer.cmd("register", password=password)
            ok = peer.expect(lambda o: o.get("cmd") == "register")
            assert ok["type"] == "ok", ok
        finally:
            peer.close()
        self.accounts.add(name)

    def xmpp(self, account: str, *, password: str = PASSWORD, resource: str = "matrix") -> XmppPeer:
        self.register(account, password)
        return self._keep(XmppPeer(self.ports["xmpp"], account, password, resource=resource))

    def close(self) -> None:
        for peer in self.peers:
            try:
                peer.close()
            except Exception:
                pass


def _world(tmp_path_factory: pytest.TempPathFactory, enforcement: str) -> Iterator[World]:
    server = ServerProcess(
        tmp_path_factory.mktemp(f"matrix-{enforcement}"),
        protocols=("line", "irc", "xmpp"),
        overrides={
            "irc": {"flood_exempt": ["127.0.0.1"]},
            "line": {"flood_burst": 10000, "flood_rate": 10000.0},
            "chat": {
                "nick_enforcement": enforcement,
                "nick_enforce_timeout": ENFORCE_SECONDS,
                "history_flush_interval": 0.2,
                "login_failure_burst": 50,
            },
        },
    )
    server.start()
    made = World(server)
    try:
        yield made
    finally:
        made.close()
        server.kill()


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The server as deployed: "strict" nick enforcement."""
    yield from _world(tmp_path_factory, "strict")


@pytest.fixture(scope="package")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server with "timeout" nick enforcement: anyone may take a registered nick for a
    while (shown as a guest), and is renamed unless they identify in time."""
    yield from _world(tmp_path_factory, "timeout")
