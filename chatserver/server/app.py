"""Assemble the server: store -> accounts -> chat service -> one listener per protocol.

This is the one place that knows every part.  :data:`PROTOCOLS` lists the protocols: each entry
turns the config and the running chat service into listeners.  Adding a protocol is one
function and one entry; the section of the same name in the config file says whether it is
enabled and where it listens.

Every connection has ``TCP_NODELAY`` (a message must leave in the reactor turn that produced
it): listeners here set it on their socket, whose accepted sockets inherit it on Linux; each
protocol's ``connectionMade`` sets it where they did not (``peer.set_no_delay``).
"""

from __future__ import annotations

import dataclasses
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.config import PROTOCOL_SECTIONS, BindPoint, Config, bind_points, format_address
from chatserver.core.accounts import AccountManager
from chatserver.core.errors import StorageUnavailable
from chatserver.core.service import ChatService
from chatserver.server.memory import MemoryTrimmer
from chatserver.server.pidfile import AlreadyRunning, PidFile
from chatserver.server.tls import (
    ReloadableTls,
    TlsError,
    ensure_self_signed,
    load_options,
    self_signed_names,
)
from chatserver.storage.sqlite import SchemaTooNew, SqliteStore, StoreUnusable
from protocols.irc.factory import IrcFactory
from protocols.line.factory import LineFactory
from protocols.transport import peer
from protocols.xmpp.factory import XmppFactory

# The namespace operators filter on; it names the part, not the module's path.
log = Logger(namespace="chatserver.app")

# Pending connections the kernel queues per listener: many clients reconnect at once after a
# restart, and Twisted's default of 50 would refuse some of them.
LISTEN_BACKLOG = 1024
# After users are told the server is going, how long their notices get to reach them.
SHUTDOWN_GRACE = 3.0
# Seconds the start waits for Redis in cluster mode before listening anyway.
CLUSTER_START_WAIT = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    """One socket to listen on and the factory that serves it."""

    protocol: str
    point: BindPoint
    factory: IProtocolFactory


@dataclasses.dataclass(slots=True)
class ProtocolContext:
    """What a protocol's entry in :data:`PROTOCOLS` gets to build its factories from."""

    config: Config
    service: ChatService
    reactor: Any
    # The server's TLS options (made on first use), for protocols that upgrade in-band (STARTTLS).
    tls_options: Callable[[], CertificateOptions]
    # The opened store, for what a protocol keeps of its own (XMPP rosters).
    store: Any
    # Protocol name -> the factory its TCP listeners use (the web listener serves the same
    # protocols over WebSocket with the same factories).
    factories: dict[str, Any] = dataclasses.field(default_factory=dict)


ProtocolBuilder = Callable[[ProtocolContext], Sequence[Listener]]


def listeners_for(
    protocol: str,
    section: Any,
    factory: IProtocolFactory,
    tls_factory: IProtocolFactory | None = None,
) -> list[Listener]:
    """A listener per bind point of ``section``; TLS points use ``tls_factory`` when given."""
    return [
        Listener(protocol, point, tls_factory if point.tls and tls_factory is not None else factory)
        for point in bind_points(section)
    ]


def build_line_listeners(ctx: ProtocolContext) -> list[Listener]:
    # One factory for the plain and the TLS port; connections tell TLS from their transport.
    factory = LineFactory(ctx.service, ctx.config.line, operators=ctx.config.operators)
    ctx.factories["line"] = factory
    return listeners_for("line", ctx.config.line, factory)


def build_irc_listeners(ctx: ProtocolContext) -> list[Listener]:
    # One factory for the plain and the TLS port: connections tell TLS from their transport.
    config = ctx.config
    factory = IrcFactory(
        ctx.service,
        config.irc,
        config.server,
        operators=config.operators,
        webirc=config.webirc,
    )
    ctx.factories["irc"] = factory
    return listeners_for("irc", ctx.config.irc, factory)


def build_xmpp_listeners(ctx: ProtocolContext) -> list[Listener]:
    # One factory for the STARTTLS port and the direct-TLS port, so that every session of the
    # server is in one table; connections tell TLS from their transport.
    factory = XmppFactory(
        ctx.service,
        ctx.config.xmpp,
        tls_options=ctx.tls_options,
        clock=ctx.reactor,
        # Rosters are XMPP's; the server's store keeps them in a table of its own.
        roster_store=ctx.store,
        # So are PEP nodes, private XML storage and vCards.
        pep_store=ctx.store,
    )
    ctx.factories["xmpp"] = factory
    return listeners_for("xmpp", ctx.config.xmpp, factory)


def build_web_listeners(ctx: ProtocolContext) -> list[Listener]:
    # After the other protocols: its WebSocket endpoints use their factories.
    from protocols.web.site import build_site

    uploads = None
    xmpp = ctx.factories.get("xmpp")
    if ctx.config.upload.enabled and xmpp is not None:
        # HTTP File Upload: the XMPP service hands out slots that this listener serves.
        from protocols.web.upload import UploadStore

        uploads = UploadStore(ctx.config.data_path("uploads"), ctx.config, ctx.reactor)
        uploads.start()
        xmpp.uploads = uploads
    site = build_site(ctx.config, factories=ctx.factories, clock=ctx.reactor, uploads=uploads)
    return listeners_for("web", ctx.config.web, site)


# Protocol name (also its config section) -> the function that makes its listeners.
PROTOCOLS: dict[str, ProtocolBuilder] = {
    "line": build_line_listeners,
    "irc": build_irc_listeners,
    "xmpp": build_xmpp_listeners,
    "web": build_web_listeners,
}


def open_store(config: Config, reactor: Any) -> Any:
    """The store named by ``[storage] backend`` (not yet opened)."""
    if config.storage.backend == "sqlite":
        return SqliteStore(config.storage.path, reactor=reactor, writer=True)
    if config.storage.backend == "postgresql":
        # Imported here: psycopg is needed only by those who choose this backend.
        try:
            from chatserver.storage.postgresql import PostgresStore
        except ImportError as err:
            raise StoreUnusable(
                f"the postgresql backend needs psycopg: pip install 'psycopg[binary]' ({err})"
            ) from None

        return PostgresStore(config.storage.dsn, reactor=reactor)
    raise ValueError(f"unknown storage backend {config.storage.backend!r}")


def endpoint_for(
    reactor: Any, point: BindPoint, tls_options: Callable[[], CertificateOptions]
) -> IStreamServerEndpoint:
    if point.tls:
        # listenSSL picks IPv6 by itself when the interface is an IPv6 address.
        return SSL4ServerEndpoint(
            reactor, point.port, tls_options(), backlog=LISTEN_BACKLOG, interface=point.host
        )
    endpoint = TCP6ServerEndpoint if ":" in point.host else TCP4ServerEndpoint
    return endpoint(reactor, point.port, backlog=LISTEN_BACKLOG, interface=point.host)


def try_bind(point: BindPoint) -> None:
    """Bind a socket to ``point`` as the listener will (address reuse on, like Twisted's) and
    close it; raises OSError when the listener could not bind."""
    family = socket.AF_INET6 if ":" in point.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((point.host, point.port))


@implementer(IStreamServerEndpoint)
class _ObservedEndpoint:
    """Wraps an endpoint so the application learns whether it listens, and on what.

    A failure is handed to ``result`` only: the service then holds no port and stops cleanly,
    and the application reports the failure once, in its own words.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint
        self.result: defer.Deferred[IListeningPort] = defer.Deferred()

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            self.result.callback(port)
            return port

        def failed(failure: Failure) -> Any:
            self.result.errback(failure)
            return None

        d: defer.Deferred[Any] = self._endpoint.listen(factory)
        # The failure is reported through ``result``: the service that called this one
        # need not see it too.
        return d.addCallbacks(listening, failed)


class StartupError(Exception):
    """The server cannot start; the message says why (already logged)."""


# Failures an operator fixes from the message alone, so they are logged without a traceback.
_EXPECTED_START_ERRORS = (
    StartupError,
    TlsError,
    OSError,
    SchemaTooNew,
    StoreUnusable,
    sqlite3.Error,
    AlreadyRunning,
)


class ChatServer(MultiService):
    """The whole server as one service: started, it opens the store, starts the chat service
    and then listens; stopped, it stops listening, tells every user, flushes history and
    closes the store.

    ``exit_status`` is 1 when the start failed (the reactor is then stopped), else 0.
    """

    def __init__(
        self,
        config: Config,
        *,
        reactor: Any = None,
        protocols: dict[str, ProtocolBuilder] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.protocols = PROTOCOLS if protocols is None else protocols
        self.exit_status = 0
        self.store: Any = None
        self.accounts: AccountManager | None = None
        self.chat: ChatService | None = None
        # Cluster mode ([cluster] redis): this process as one node of several.
        self.cluster: Any = None
        self.ports: list[tuple[Listener, IListeningPort]] = []
        # Listeners read the TLS options through this, so a reload (SIGHUP) can replace them.
        self.tls = ReloadableTls(
            self._load_tls,
            handshake_timeout=lambda: self.config.tls.handshake_timeout,
            clock=reactor,
        )
        # Held while the server runs: a second server (or `chatserver restore`) on the same
        # data directory sees it and refuses.
        self.pidfile = PidFile(config.data_dir)
        self.metrics: Any = None
        # Gives back what the C allocator holds free after a burst (see memory.py).
        self.memory = MemoryTrimmer(config.server.memory_trim_interval, clock=reactor)
        self.http_port: IListeningPort | None = None
        # The operator's control socket (chatserver admin ...).
        self.control_port: IListeningPort | None = None
        self._starting: defer.Deferred[None] | None = None
        self._ready_waiters: list[defer.Deferred[None]] = []
        self._ready = False

    # -- start ------------------------------------------------------------------------------

    def startService(self) -> None:
        # Children (the listeners) are added only once the store and the core are up, so no
        # client can connect to a half-started server.
        super().startService()
        self._starting = defer.ensureDeferred(self._start())

    @property
    def ready(self) -> bool:
        """Whether the start finished and every listener listens."""
        return self._ready

    def enabled_protocols(self) -> list[str]:
        return [name for name in self.protocols if getattr(self.config, name).enabled]

    def factories(self) -> list[tuple[str, Any]]:
        """Each protocol factory in use, once, with its protocol's name."""
        seen: set[int] = set()
        # Each protocol's own factory class, whose settings a reload replaces.
        found: list[tuple[str, Any]] = []
        for listener, _port in self.ports:
            if id(listener.factory) not in seen:
                seen.add(id(listener.factory))
                found.append((listener.protocol, listener.factory))
        return found

    def reload(self) -> Any:
        """Read the configuration file again and apply what can change live (SIGHUP)."""
        from chatserver.server.reload import reload

        return reload(self)

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once every listener listens; errbacks with StartupError if the start failed."""
        if self._ready:
            return defer.succeed(None)
        if self.exit_status:
            return defer.fail(StartupError("the server did not start"))
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    async def _start(self) -> None:
        try:
            await self._bring_up()
        except Exception as err:
            self.exit_status = 1
            if isinstance(err, StorageUnavailable) and err.error is not None:
                # The operator needs the database's own words, not the users' "try later".
                err = StartupError(f"the database failed: {err.error}")
            if isinstance(err, _EXPECTED_START_ERRORS):
                log.critical("cannot start: {error}", error=str(err))
            else:
                log.failure("cannot start", Failure(err))
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.errback(StartupError(str(err)))
            self.reactor.callWhenRunning(self._stop_reactor)
            return
        self._ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    async def _bring_up(self) -> None:
        config = self.config
        # Accounts (salted keys) and the TLS key live here: only this user may look in.
        self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pidfile.acquire()
        # What is bound to fail later fails now, before the database is created or migrated.
        self._preflight()
        if config.metrics.enabled:
            from chatserver.server.metrics import Metrics

            self.metrics = Metrics(self)
        self.store = open_store(config, self.reactor)
        if self.metrics is not None:
            self.store.observe = self.metrics.observe_storage
        await self.store.open(check=True)
        self.accounts = AccountManager(
            self.store, config.chat, clock=self.reactor, run_in_thread=deferToThread
        )
        self.chat = ChatService(
            config.chat,
            clock=self.reactor,
            accounts=self.accounts,
            room_store=self.store,
            history_store=self.store,
            ban_store=self.store,
            block_store=self.store,
            # Runs after the reactor has read every ready connection of the turn.
            end_of_turn=lambda flush: self.reactor.callLater(0, flush),
        )
        self.chat.set_config_bans(config.bans)
        await self.chat.start()
        if config.cluster.redis:
            await self._join_cluster()

        ctx = ProtocolContext(
            config=config,
            service=self.chat,
            reactor=self.reactor,
            tls_options=self.tls_options,
            store=self.store,
        )
        listeners: list[Listener] = []
        for name, build in self.protocols.items():
            section = getattr(config, name, None)
            if section is not None and not section.enabled:
                continue
            listeners.extend(build(ctx))
        for name in PROTOCOL_SECTIONS:
            if getattr(config, name).enabled and name not in self.protocols:
                log.warn(
                    "[{section}] is enabled but this server has no such protocol", section=name
                )
        for listener in listeners:
            await self._listen(listener)
        if self.metrics is not None:
            await self._listen_http()
        self._listen_control()
        self.memory.start()
        log.info(
            "ready server={server} listeners={count} reactor={reactor}",
            server=config.server.name,
            count=len(listeners),
            reactor=type(self.reactor).__name__,
        )

    async def _join_cluster(self) -> None:
        from chatserver.cluster.node import ClusterNode, ClusterRefused

        settings = self.config.cluster
        assert self.chat is not None
        self.cluster = ClusterNode(
            self.chat,
            url=settings.redis,
            node=settings.node,
            lease=settings.lease,
            prefix=settings.prefix,
            reactor=self.reactor,
            share_rendered=settings.share_rendered,
            publish_interval=settings.publish_interval,
            stream_bytes=settings.stream_bytes,
            cloak_check=self.chat.cloak_fingerprint(),
        )
        self.cluster.start()
        # Clients are taken once the node knows the others' users and rooms.  Users may
        # connect before Redis answers: they are told to try again until it does.
        ready = self.cluster.when_ready()
        timeout = self.reactor.callLater(CLUSTER_START_WAIT, ready.cancel)
        try:
            await ready
        except ClusterRefused as err:
            timeout.cancel()
            raise StartupError(str(err)) from None
        except defer.CancelledError:
            if self.cluster.up:
                log.warn("cluster: taking clients before every node's state has come")
            else:
                log.warn(
                    "redis {url} does not answer yet: new nicks and joins wait for it",
                    url=settings.redis,
                )
        else:
            timeout.cancel()

    def _preflight(self) -> None:
        """Load the TLS certificate and try each listening address, so that a bad certificate
        or a port in use stops the start before the store is touched.

        The sockets tried are closed again: the listeners bind for real once the core is up
        (the core needs the store first), so that no client reaches a half-started server.
        """
        config = self.config
        points = [
            (name, point)
            for name in self.protocols
            if getattr(config, name, None) is not None and getattr(config, name).enabled
            for point in bind_points(getattr(config, name))
        ]
        # XMPP offers STARTTLS on its plain port: it needs the certificate as much as TLS ports.
        if any(point.tls for _name, point in points) or (
            "xmpp" in self.protocols and config.xmpp.enabled
        ):
            self.tls.options()
        if config.metrics.enabled:
            metrics = BindPoint(config.metrics.listen, config.metrics.port, False, "port")
            points.append(("http", metrics))
        for name, point in points:
            try:
                try_bind(point)
            except OSError as err:
                what = "for metrics" if name == "http" else f"protocol={name}"
                raise StartupError(f"cannot listen {what} address={point}: {err}") from err

    async def _listen(self, listener: Listener) -> None:
        point = listener.point
        endpoint = _ObservedEndpoint(endpoint_for(self.reactor, point, self._listener_tls))
        StreamServerEndpointService(endpoint, listener.factory).setServiceParent(self)
        try:
            port = await endpoint.result
        except Exception as err:
            raise StartupError(
                f"cannot listen protocol={listener.protocol} address={point}: {err}"
            ) from err
        self.ports.append((listener, port))
        peer.listen_no_delay(port)
        host: Any = port.getHost()  # a TCP address: host and port
        address = format_address(host.host, host.port)
        if point.tls:
            log.info(
                "listening protocol={protocol} address={address} tls=yes",
                protocol=listener.protocol,
                address=address,
            )
        else:
            log.info(
                "listening protocol={protocol} address={address}",
                protocol=listener.protocol,
                address=address,
            )

    async def _listen_http(self) -> None:
        from chatserver.server.metrics import make_site

        settings = self.config.metrics
        endpoint = endpoint_for(
            self.reactor,
            BindPoint(settings.listen, settings.port, False, "port"),
            self._listener_tls,
        )
        try:
            self.http_port = await endpoint.listen(make_site(self, self.metrics))
        except Exception as err:
            raise StartupError(
                f"cannot listen for metrics address={format_address(settings.listen, settings.port)}:"
                f" {err}"
            ) from err
        self.metrics.lag.start()
        host: Any = self.http_port.getHost()  # a TCP address: host and port
        log.info(
            "listening protocol=http address={address} paths=/metrics,/health",
            address=format_address(host.host, host.port),
        )

    def _listen_control(self) -> None:
        from chatserver.server.control.server import listen

        try:
            self.control_port = listen(self.reactor, self)
        except Exception as err:
            raise StartupError(f"cannot listen on the control socket: {err}") from err

    def tls_options(self) -> CertificateOptions:
        """The server's current TLS options; the first call loads (or makes) the certificate."""
        return self.tls.options()

    def _listener_tls(self) -> Any:
        # Loaded now, so a bad certificate stops the start rather than the first client.
        self.tls.options()
        return self.tls

    def _load_tls(self) -> CertificateOptions:
        tls = self.config.tls
        if tls.certificate:
            return load_options(Path(tls.certificate), Path(tls.key))
        cert, key, made = ensure_self_signed(self.config.data_dir, self_signed_names(self.config))
        if made:
            log.warn(
                "made a self-signed TLS certificate {path}; clients must be told to "
                "accept it, or set [tls] certificate and key",
                path=str(cert),
            )
        return load_options(cert, key)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    # -- stop -------------------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._starting is not None:
            # A stop during the start (SIGTERM while the store migrates) waits for it to end,
            # so what was opened is closed.
            await self._starting
        self.memory.stop()
        # Listeners first: no one connects while the others are being told.
        await super().stopService()
        if self.metrics is not None:
            self.metrics.lag.stop()
        if self.http_port is not None:
            await defer.maybeDeferred(self.http_port.stopListening)
            self.http_port = None
        if self.control_port is not None:
            await defer.maybeDeferred(self.control_port.stopListening)
            self.control_port = None
        if self.cluster is not None:
            try:
                await self.cluster.stop()
            except Exception:
                log.failure("leaving the cluster")
        if self.chat is not None:
            try:
                await self.chat.shutdown()
                await self._let_connections_close()
            except Exception:
                log.failure("shutting down the chat service")
        if self.store is not None:
            try:
                await self.store.close()
            except Exception:
                log.failure("closing the store")
        self.pidfile.release()
        log.info("stopped")

    async def _let_connections_close(self) -> None:
        # The reactor drops open connections without flushing them once shutdown proceeds:
        # wait (briefly) for each goodbye to be written and its connection closed.
        assert self.chat is not None
        deadline = self.reactor.seconds() + SHUTDOWN_GRACE
        while self.chat.connection_count() and self.reactor.seconds() < deadline:
            d: defer.Deferred[None] = defer.Deferred()
            self.reactor.callLater(0.02, d.callback, None)
            await d


def build_service(config: Config, *, reactor: Any = None) -> ChatServer:
    """The service tree for ``config``; start it (or hang it off an Application) to run."""
    return ChatServer(config, reactor=reactor)
