"""A byte-stream protocol (IRC, line chat) carried over WebSocket messages.

The handshake and the frames are wsproto's; this module only decides what a message means to
the protocol under it.  :class:`WebSocketEndpoint` is the ``twisted.web`` resource that
upgrades a GET (after the origin check and the choice of subprotocol); from then on a
:class:`WebSocketChannel` owns the socket and gives the protocol a :class:`MessageTransport`,
which looks like a TCP transport to it: the protocol's connection code, flood control, output
limit and timers are the very ones of its TCP listener.

Each message received becomes one line of input; each line the protocol writes leaves as one
message (the IRCv3 WebSocket rule, and what a JSON Lines client in a browser wants).  A message
longer than the limit closes the connection with 1009 (message too big); a frame that breaks
RFC 6455 closes it with 1002 (protocol error) or 1007 (not UTF-8), as wsproto decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IProtocol, ISSLTransport, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError
from zope.interface import alsoProvides, implementer

from protocols.transport import peer
from protocols.transport.output import BoundedOutput, unsent_bytes
from protocols.web.policy import WebPolicy

log = Logger()

# Seconds the peer gets to answer our close frame before the socket is dropped.
CLOSE_TIMEOUT = 5.0
UNBOUNDED = 1 << 62
# Unsent bytes past which pings are no longer answered.
PONG_BACKLOG = 64 * 1024


class LineFraming:
    """One message is one line (IRC, line chat): the line ending is the transport's."""

    __slots__ = ()

    def inbound(self, message: bytes) -> bytes:
        return message.rstrip(b"\r\n") + b"\r\n"

    def outbound(self, data: bytes) -> list[bytes]:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        return [line.removesuffix(b"\r") for line in lines]


class Subprotocol:
    """How one WebSocket subprotocol carries a byte-stream protocol.

    ``binary``: messages leave as binary messages (else as text, which must be UTF-8);
    ``framing`` makes the object that turns messages into the protocol's bytes and back.
    """

    __slots__ = ("binary", "framing", "name")

    def __init__(
        self, name: str, *, binary: bool = False, framing: Callable[[], Any] = LineFraming
    ) -> None:
        self.name = name
        self.binary = binary
        self.framing = framing


@implementer(ITransport, IConsumer)
class MessageTransport:
    """What the protocol under a WebSocket sees as its transport.

    ``write`` cuts the protocol's output into messages (lines, or stanzas) and sends each.  The
    output limit of :class:`~protocols.transport.output.BoundedOutput` reads what the socket
    under us still holds (``dataBuffer``, ``offset``, ``_tempDataLen``), so a slow reader is
    measured as on TCP.
    """

    # The protocol's bytes travel in messages (protocols.transport.handoff.is_websocket).
    websocket = True

    def __init__(self, channel: WebSocketChannel, address: str, tls: bool) -> None:
        self._channel = channel
        self._address = address
        self.TLS = tls
        if tls:
            alsoProvides(self, ISSLTransport)
        self.connected = True
        self.disconnecting = False

    # -- what BoundedOutput measures (AttributeError when the socket cannot say) -------

    @property
    def dataBuffer(self) -> bytes:
        return self._channel.raw.dataBuffer

    @property
    def offset(self) -> int:
        return self._channel.raw.offset

    @property
    def _tempDataLen(self) -> int:
        return self._channel.raw._tempDataLen

    # -- ITransport ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.connected and not self.disconnecting:
            self._channel.send_output(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self._channel.close(CloseReason.NORMAL_CLOSURE)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._channel.abort()

    def getPeer(self) -> IPv4Address | IPv6Address:
        kind = IPv6Address if ":" in self._address else IPv4Address
        return kind("TCP", self._address, 0)

    def getHost(self) -> Any:
        return self._channel.raw.getHost()

    def setTcpNoDelay(self, enabled: bool) -> None:
        peer.set_no_delay(self._channel.raw)

    # -- IConsumer: the protocol hears of a slow reader from the socket itself ----------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._channel.raw.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._channel.raw.unregisterProducer()


@implementer(IProtocol)
class WebSocketChannel:
    """The socket after the upgrade: wsproto's frames in and out, the protocol's lines between."""

    def __init__(
        self,
        ws: Connection,
        inner: Any,
        subprotocol: Subprotocol,
        *,
        address: str,
        secure: bool,
        max_message_bytes: int,
        clock: Any,
        request: Request | None = None,
    ) -> None:
        self.ws = ws
        self.inner = inner
        self.subprotocol = subprotocol
        self.address = address
        self.secure = secure
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        # The HTTP request that was upgraded: told when the socket goes, as its channel
        # would have told it.
        self.request = request
        self.framing = subprotocol.framing()
        # Its direct path to the socket only: the protocol under us enforces the limit.
        self._output = BoundedOutput(UNBOUNDED)
        self.raw: Any = None
        self.transport: MessageTransport | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._closed = False

    # -- IProtocol (the socket under us) ------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self.raw = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        self.transport = MessageTransport(self, self.address, self.secure)
        self.inner.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if not self._message_part(event):
                    return
            elif isinstance(event, Ping):
                # A client that sends pings and reads nothing would make the answers pile
                # up: past a bound they are dropped (one pong may answer several pings).
                unsent = unsent_bytes(self.raw)
                if unsent is None or unsent < PONG_BACKLOG:
                    self.raw.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._peer_closed(event)
                return
            elif isinstance(event, Pong):
                # An answer to a probe: the protocol's own idle timer counts input only.
                pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.connected = False
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connectionLost(reason)
        # Letting go of the message transport and the protocol (both of which refer back to
        # this channel), and the request letting go of its HTTP channel (which refers to this
        # one), leave no cycle: all are freed as soon as nothing holds them, instead of by
        # the garbage collector's next full collection.
        request, self.request = self.request, None
        if request is not None:
            request.connectionLost(reason or connectionDone)

    # -- input --------------------------------------------------------------------------

    def _message_part(self, event: TextMessage | BytesMessage) -> bool:
        data = event.data
        part = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._size += len(part)
        if self._size > self.max_message_bytes:
            log.info(
                "websocket from {address} closed: message over {limit} bytes",
                address=self.address,
                limit=self.max_message_bytes,
            )
            self.close(CloseReason.MESSAGE_TOO_BIG, "message too big")
            return False
        self._parts.append(part)
        if event.message_finished:
            message = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            data = self.framing.inbound(message)
            if data:
                self.inner.dataReceived(data)
        return True

    def _peer_closed(self, event: CloseConnection) -> None:
        # A protocol error found by wsproto arrives here too, with its code (1002, 1007).
        if self.ws.state is not ConnectionState.CLOSED:
            try:
                self.raw.write(self.ws.send(event.response()))
            except Exception:
                pass
        self._closed = True
        self.raw.loseConnection()

    # -- output -------------------------------------------------------------------------

    def send_output(self, data: bytes) -> None:
        if self._closed or self.ws.state is not ConnectionState.OPEN:
            return
        messages = self.framing.outbound(data)
        if not messages:
            # Nothing to say (a whitespace keep-alive): a WebSocket ping says it instead.
            self.raw.write(self.ws.send(Ping(b"")))
            return
        send = self.ws.send
        if self.subprotocol.binary:
            out = [send(BytesMessage(m)) for m in messages]
        else:
            out = [send(TextMessage(m.decode("utf-8", "replace"))) for m in messages]
        # Straight to the socket when nothing is queued, as every protocol's TCP output goes:
        # queued in Twisted's buffer instead, a burst within one turn would count as unread.
        self._output.write(self.raw, out[0] if len(out) == 1 else b"".join(out))

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what was written; the socket closes when the peer answers
        (or after a timeout)."""
        if self._closed:
            return
        self._closed = True
        if self.ws.state is ConnectionState.OPEN:
            self.raw.write(self.ws.send(CloseConnection(code, reason)))
        try:
            self.raw.unregisterProducer()
        except RuntimeError:
            pass
        self.raw.loseConnection()
        self.clock.callLater(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self.raw is not None and self.raw.connected:
            self.raw.abortConnection()


class WebSocketEndpoint(Resource):
    """A GET upgraded to WebSocket, the byte-stream protocol ``build()`` makes on top of it.

    ``subprotocols`` are offered in order of preference; a client that proposes none of them
    is refused (400), as is a page whose origin the policy does not allow (403).  ``policy``
    gives the listener's current rules (a reload replaces them).  ``prepare``
    may adjust the protocol object before it starts (line chat starts in JSON mode).
    """

    isLeaf = True

    def __init__(
        self,
        policy: Callable[[], WebPolicy],
        subprotocols: Sequence[Subprotocol],
        build: Callable[[Any], Any],
        *,
        require_subprotocol: bool = True,
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.subprotocols = tuple(subprotocols)
        self.build = build
        self.require_subprotocol = require_subprotocol
        self.prepare = prepare

    def render_GET(self, request: Request) -> bytes | int:
        policy = self.policy()
        origin = request.getHeader("origin")
        if not policy.origin_allowed(origin, request):
            return _refuse(request, 403, f"origin {origin} is not allowed\n")
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        try:
            handshake.initiate_upgrade_connection(headers, request.uri)
        except RemoteProtocolError:
            return _refuse(request, 400, "expected a WebSocket upgrade\n")
        upgrade = next((e for e in handshake.events() if isinstance(e, WsRequest)), None)
        offered = list(upgrade.subprotocols) if upgrade is not None else []
        chosen = next((s for s in self.subprotocols if s.name in offered), None)
        if chosen is None:
            if self.require_subprotocol or offered:
                names = ", ".join(s.name for s in self.subprotocols)
                return _refuse(request, 400, f"expected the WebSocket subprotocol {names}\n")
            chosen = self.subprotocols[0]
        address = policy.client_address(request)
        inner = self.build(address)
        if self.prepare is not None:
            self.prepare(inner)
        accept = AcceptConnection(subprotocol=chosen.name if chosen.name in offered else None)
        reply = handshake.send(accept)
        ws = handshake.connection
        assert ws is not None
        channel = request.channel
        raw: Any = channel.transport
        # The HTTP channel gives the socket up: its idle timeout and its place as the
        # socket's producer go to the protocol now on it.
        channel.setTimeout(None)
        try:
            raw.unregisterProducer()
        except RuntimeError:
            pass
        wire = WebSocketChannel(
            ws,
            inner,
            chosen,
            address=address,
            secure=policy.client_secure(request),
            max_message_bytes=policy.max_message_bytes,
            clock=policy.clock,
            request=request,
        )
        raw.write(reply)
        # COMPAT: Twisted 26 has no public way to take a socket over from its HTTP channel;
        # this is the hook its own twisted.web.websocket uses for the same hand-over.
        channel._protocolUpgradeForWebsockets(wire)
        return NOT_DONE_YET


def _refuse(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")
