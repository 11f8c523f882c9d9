"""One connection to Redis that comes back by itself, and says when it is up and down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

log = Logger()

# A reply slower than this means Redis is stuck (stopped, swapping): the connection is
# dropped and made again, and the node counts Redis as unreachable meanwhile.
REPLY_TIMEOUT = 3.0


def parse_url(url: str) -> tuple[str, int, int]:
    """(host, port, database) of ``redis://host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"expected redis://host:port/db, got {url!r}")
    path = parts.path.strip("/")
    return parts.hostname, parts.port or 6379, int(path) if path else 0


class _RedisFactory(Factory):
    """Builds txredisapi's protocol for ClientService, which does the reconnecting."""

    # What txredisapi's protocol looks up on its factory when a login fails.
    isLazy = True

    def __init__(self, database: int, charset: str | None) -> None:
        self.database = database
        self.charset = charset

    def buildProtocol(self, addr: Any) -> txredisapi.RedisProtocol:
        proto = txredisapi.RedisProtocol(
            charset=self.charset,
            replyTimeout=REPLY_TIMEOUT,
            dbid=self.database or None,
            convertNumbers=False,
        )
        proto.factory = self
        return proto

    def stopTrying(self) -> None:
        """Called by the protocol when SELECT fails: ClientService retries anyway."""

    def connectionError(self, why: str) -> None:
        log.error("redis: {why}", why=why)


class RedisLink:
    """A connection to Redis, made again whenever it is lost.

    ``on_up(protocol)`` runs each time a connection is ready (the first and every later one),
    ``on_down()`` each time one is lost.  ``proto`` is the live connection or None.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        on_up: Callable[[txredisapi.RedisProtocol], None],
        on_down: Callable[[], None],
        name: str,
        binary: bool = False,
    ) -> None:
        host, port, database = parse_url(url)
        self.name = name
        self.proto: txredisapi.RedisProtocol | None = None
        self._on_up = on_up
        self._on_down = on_down
        endpoint = HostnameEndpoint(reactor, host, port, timeout=REPLY_TIMEOUT)
        # Quick retries: while Redis is away no new nick or join is possible.
        self._service = ClientService(
            endpoint,
            _RedisFactory(database, None if binary else "utf-8"),
            retryPolicy=lambda attempt: min(0.2 * 2**attempt, 2.0),
            prepareConnection=self._prepare,
            clock=reactor,
        )

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> defer.Deferred[None]:
        return self._service.stopService()

    def _prepare(self, proto: txredisapi.RedisProtocol) -> defer.Deferred[None]:
        def ready(proto: txredisapi.RedisProtocol) -> None:
            proto.whenDisconnected().addCallback(self._lost)
            self.proto = proto
            log.info("redis link={name} up", name=self.name)
            self._on_up(proto)

        return proto.whenConnected().addCallback(ready)

    def _lost(self, proto: txredisapi.RedisProtocol) -> None:
        if self.proto is proto:
            self.proto = None
            log.warn("redis link={name} lost", name=self.name)
            self._on_down()
