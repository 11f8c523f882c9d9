"""One connection to Redis that comes back by itself, and says when it is up and down."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from chatserver.cluster.address import parse_url

log = Logger()

# A reply slower than this means Redis is stuck (stopped, swapping): the connection is
# dropped and made again, and the node counts Redis as unreachable meanwhile.
REPLY_TIMEOUT = 3.0


def encode_command(args: tuple[Any, ...], charset: str | None, errors: str = "strict") -> bytes:
    """A command in RESP (an array of bulk strings), made in one join.

    txredisapi makes each command in a bytearray, then copies it twice more, so a node's
    turn (an XADD of tens of kB) was copied three times on its way out: 7.8 µs for 33 kB
    against 3.6 µs in one join (a microbenchmark on this machine).  The values encode as
    txredisapi encodes them: bytes as they are, text in ``charset`` (UTF-8 when None),
    floats in fixed point, anything else as its ``str``."""
    parts = [b"*%d\r\n" % len(args)]
    add = parts.append
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is int:
            data = b"%d" % arg
        else:
            data = _encode_value(arg, charset, errors)
        add(b"$%d\r\n" % len(data))
        add(data)
        add(b"\r\n")
    return b"".join(parts)


def _encode_value(arg: Any, charset: str | None, errors: str) -> bytes:
    """One value as txredisapi encodes it (subclasses as their base type)."""
    if isinstance(arg, bytes):
        return bytes(arg)
    if isinstance(arg, str):
        try:
            return arg.encode(charset or "utf-8", errors)
        except UnicodeEncodeError as err:
            raise txredisapi.InvalidData(f"cannot encode {arg!r}: {err}") from err
    if isinstance(arg, float):
        return format(arg, "f").encode()
    if isinstance(arg, bytearray):
        return bytes(arg)
    # The rest as its text, as txredisapi does: booleans ("True"), subclasses of int.
    return str(arg).encode()


class _Protocol(txredisapi.RedisProtocol):
    """txredisapi's protocol, with its commands made by ``encode_command``, and the CPU time
    its replies take (parsing them and all that their answers run) kept on its factory."""

    factory: _RedisFactory

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        return encode_command(args, self.charset, self.errors)

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        # The thread's own CPU clock, not the wall clock: a node that shares its core is
        # not charged for the time another process ran.  Read once per chunk the reactor
        # read (up to 64 kB), so the reading costs nothing next to what it measures.
        start = time.thread_time()
        try:
            super().dataReceived(data, unpause)
        finally:
            self.factory.cpu_seconds += time.thread_time() - start


class _RedisFactory(Factory):
    """Builds txredisapi's protocol for ClientService, which does the reconnecting."""

    # What txredisapi's protocol looks up on its factory when a login fails.
    isLazy = True

    def __init__(self, database: int, charset: str | None) -> None:
        self.database = database
        self.charset = charset
        # CPU seconds its connections' replies took, over every connection it made.
        self.cpu_seconds = 0.0

    def buildProtocol(self, addr: Any) -> txredisapi.RedisProtocol:
        proto = _Protocol(
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
        address = parse_url(url)
        self.name = name
        self.proto: txredisapi.RedisProtocol | None = None
        self._on_up = on_up
        self._on_down = on_down
        endpoint: Any
        if address.path:
            endpoint = UNIXClientEndpoint(reactor, address.path, timeout=REPLY_TIMEOUT)
        else:
            endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=REPLY_TIMEOUT)
        self._factory = _RedisFactory(address.database, None if binary else "utf-8")
        # Quick retries: while Redis is away no new nick or join is possible.
        self._service = ClientService(
            endpoint,
            self._factory,
            retryPolicy=lambda attempt: min(0.2 * 2**attempt, 2.0),
            prepareConnection=self._prepare,
            clock=reactor,
        )

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds this link's replies have taken since it started: parsing them and
        what their answers ran (for a stream reader, applying what it read)."""
        return self._factory.cpu_seconds

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
