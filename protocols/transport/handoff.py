"""Cluster mode: a client whose account's user is on another node is served by that node.

An account's user lives on one node, A, with all its connections (``chatserver.core.handover``).
A client that proves the account on another node, B, before it has a user there is *handed
off*: B keeps the socket (TCP, TLS or WebSocket: everything below the protocol's byte stream)
and becomes a pipe; the protocol object for the client is made again on A over a
:class:`RelayTransport`, in the state the connection was in when the credentials were proven,
and A completes the login (A sends the success reply).  From then on every byte the client
sends goes B to A, every byte A's protocol writes goes A to B, which writes it to the socket
through its transport (TLS, WebSocket messages).  The bytes travel through the cluster's
Redis streams (``chatserver.cluster.relay``); a protocol reaches them only through the chat
service.

On node B, the protocol:

- learns of the case from ``ChatService.log_in`` (or ``identify``) failing with an
  AccountError whose ``node`` is a node name (its ``account`` is the account as stored);
- calls :func:`hand_off` with the state (:class:`HandoffState`).  False: no cluster, Redis
  unreachable, or that node is not known alive: refuse the login as before.  True:
  ``protocol.relay`` is set, :func:`hand_off` has called ``protocol.quiesce(account)``
  (cancel its timers, idle and flood machinery, write nothing more itself, and let the core
  forget its connection with ``ChatService.handed_off``: nobody sees a connection without a
  user go; a user it had quits as one whose connection logged in to the account's user),
  and the protocol must begin
  ``dataReceived`` with ``if self.relay is not None: self.relay.from_client(data); return``
  and ``connectionLost`` with ``if self.relay is not None: self.relay.client_lost(reason);
  return``.  What A's protocol writes then goes to ``protocol.transport`` (the socket),
  and A's close closes it.

A login made after the client has a user (IRC SASL or NickServ after registration, line
chat's ``/identify`` after a nick) is handed off too: the protocol puts in its state what
``ChatService.departure`` returns (None: refuse as before), and A logs in with it as the
``arrival``: its client is shown leaving its user's rooms and nick there, as on one process.

On node A, each protocol's factory calls :func:`register` at setup with its ``resume(transport,
state)``: it builds the protocol as its listener would, attaches it to ``transport`` (a
:class:`RelayTransport`: ``protocol.makeConnection`` is NOT called, so nothing a new connection
does first happens: no greeting, no probe), restores ``state``, completes the login to
``state["account"]`` as after its credentials were checked (``ChatService.log_in``, the success
reply), and then calls ``transport.resumeProducing()``: the transport starts paused, holding
``state["pending"]`` and whatever the client sends meanwhile, and feeds them to
``dataReceived`` then, in order (``resume`` may call it before it returns: what comes is
held until the protocol it returns is attached).  If the login fails on A the protocol answers as a failed
login does, then resumes too (or closes).  ``resume`` returns the protocol, or None when it
cannot serve the client (the relay is then closed, and so is the socket on B).

Limits per address, flood control, output limits and idle timeouts apply on A as to any of
A's connections; flood control credits the time the client's bytes waited on their way (Redis
unreachable), as it credits a stall of A itself, so a client under its limit is not taken for
a flood when what it sent meanwhile arrives in one go.  B enforces only what is below the protocol: TLS and WebSocket framing.  It
tells A when the socket stops taking output and when it takes it again: A's transport then
pauses and resumes the protocol's output producer, so that the protocol's own output limit
drops a client that never reads, as for A's own sockets; :data:`MAX_BACKLOG` bounds what B
holds meanwhile (past it B drops the client itself).

Lifecycle: the socket closes on B: A's protocol sees ``connectionLost``.  A's protocol closes
its transport (``loseConnection``, ``abortConnection``): B closes the socket the same way.
Either node dies (or restarts, or leaves the cluster): the other ends its side (B closes the
sockets, writing first what the protocol's ``relay_farewell(reason)`` returns, if it has
that method; A's protocols see ``connectionLost``).  Redis unreachable: the relayed bytes
wait, in order, and go once it is back, as every stream entry does; A hears nothing of the
client meanwhile, so an outage past A's idle timeout ends the connection as a silent one
(its probe and farewell reach the client once Redis is back).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from chatserver.core.interfaces import RELAY_ABORTED as ABORTED
from chatserver.core.interfaces import RELAY_CLOSED as CLOSED
from chatserver.core.interfaces import RELAY_LOST as LOST
from protocols.transport import close
from protocols.transport.output import BoundedOutput
from protocols.transport.stall import InputStalls, watch_for

if TYPE_CHECKING:
    from twisted.internet.protocol import Protocol as TwistedProtocol

log = Logger()

# The kinds of protocol that hand clients off.
IRC = "irc"
XMPP = "xmpp"
LINE = "line"
KINDS = (IRC, XMPP, LINE)

# The state's keys (see HandoffState).
KIND = "kind"
ACCOUNT = "account"
ADDRESS = "address"
HOST = "host"
TLS = "tls"
WS = "ws"
CERT = "cert"
PENDING = "pending"
ARRIVAL = "arrival"
P = "p"

# Output B holds for a relayed client that does not read, at the most.  B tells A when the
# socket stops taking its output and when it takes it again, so that the protocol on A
# counts what it writes meanwhile against its own limit (and drops a reader that never
# reads, as for its own sockets); this bound is for what is on its way when A decides.
MAX_BACKLOG = 4 << 20

# How a relay ended (``RelayEnd.ended``): CLOSED, ABORTED, LOST (chatserver.core.interfaces).


class HandoffState(TypedDict):
    """The state of a connection handed to another node: MessagePack-able (str keys; values
    str, int, float, bool, bytes, list, dict or None)."""

    # IRC, XMPP or LINE.
    kind: str
    # The account proven, as stored.
    account: str
    # The peer's address as the core knows it (after WEBIRC or PROXY substitution).
    address: str
    # Its resolved host name, if the protocol has one.
    host: str | None
    # The client's connection is encrypted.
    tls: bool
    # The WebSocket flavour: the protocol on A is the one its WebSocket listener builds.
    ws: bool
    # The client certificate's fingerprint, if any.
    cert: str | None
    # Input received on B and not processed (B stopped at the login): A processes it first.
    pending: bytes
    # A login after the client had a user: what ChatService.departure gave (else None).
    arrival: dict[str, Any] | None
    # The protocol's own state (defined by each protocol).
    p: dict[str, Any]


class ClientRelay(Protocol):
    """``protocol.relay`` on node B, once the client is handed off."""

    def from_client(self, data: bytes) -> None:
        """Bytes the client sent: they go to its protocol on node A."""

    def client_lost(self, reason: Failure | None) -> None:
        """The client's socket closed: its protocol on node A sees it."""


class RelayLink(Protocol):
    """One end of a relay in the cluster (``chatserver.cluster.relay``): what goes to the
    other node."""

    def send(self, data: bytes) -> None:
        """Bytes for the other end, in order."""

    def close(self, reason: str, *, abort: bool = False) -> None:
        """This end is done (after what was sent): the other end is told, once."""

    def flow(self, paused: bool) -> None:
        """The client's node: the socket stopped taking output (``paused``), or takes it
        again; the serving node pauses or resumes its protocol's output producer."""


class RelayEnd(Protocol):
    """What the cluster tells an end of a relay (both ``ClientEnd`` and ``RelayTransport``)."""

    def received(self, data: bytes, late: float = 0.0) -> None:
        """Bytes from the other end, in order; ``late``: seconds they were held up on the
        way, beyond the relay's usual time (Redis was unreachable)."""

    def ended(self, how: str, reason: str) -> None:
        """The other end closed (CLOSED), aborted (ABORTED), or its node is gone (LOST)."""

    def flow(self, paused: bool) -> None:
        """The client's socket stopped taking output, or takes it again (serving node)."""


class Relaying(Protocol):
    """What the chat service offers for handing off (``chatserver.core.relaying``)."""

    clock: Any

    def register_resumer(
        self, kind: str, resumer: Callable[[RelayLink, dict[str, Any]], RelayEnd | None]
    ) -> None: ...

    def open_relay(self, node: str, state: dict[str, Any], end: RelayEnd) -> RelayLink | None: ...


# resume(transport, state) -> the protocol, or None.
Resume = Callable[["RelayTransport", HandoffState], "TwistedProtocol | None"]


def register(service: Relaying, kind: str, resume: Resume) -> None:
    """``kind``'s clients handed to this node are resumed by ``resume`` (see the module)."""

    def resumer(link: RelayLink, state: dict[str, Any]) -> RelayEnd | None:
        transport = RelayTransport(link, state, service.clock)
        try:
            protocol = resume(transport, state)  # type: ignore[arg-type]
        except Exception:
            log.failure("resuming a {kind} client handed off", kind=kind)
            protocol = None
        if protocol is None:
            return None
        transport.attach(protocol)
        return transport

    service.register_resumer(kind, resumer)


def is_websocket(transport: Any) -> bool:
    """Whether ``transport`` carries the protocol in WebSocket messages (state["ws"])."""
    return bool(getattr(transport, "websocket", False))


def hand_off(protocol: Any, service: Relaying, node: str, state: HandoffState) -> bool:
    """Hand the client of ``protocol`` (on this node) to ``node``, where its account's user
    is: True once done (``protocol.relay`` is set), False when it cannot be (refuse)."""
    transport = protocol.transport
    if (
        transport is None
        or not getattr(transport, "connected", True)
        # Served here for another node already: that node hands it on itself.
        or isinstance(transport, RelayTransport)
    ):
        return False
    end = ClientEnd(protocol, service.clock)
    link = service.open_relay(node, dict(state), end)
    if link is None:
        return False
    end.link = link
    protocol.quiesce(state["account"])
    protocol.relay = end
    end.start()
    return True


@implementer(IPushProducer)
class ClientEnd:
    """Node B's end: the client's socket, written with what A's protocol writes; the
    socket's producer, which tells A when the client stops reading and starts again."""

    def __init__(self, protocol: Any, clock: Any) -> None:
        self.protocol = protocol
        self.transport: Any = protocol.transport
        self.clock = clock
        self.link: RelayLink | None = None
        self.output = BoundedOutput(MAX_BACKLOG)
        self.done = False
        self.paused = False

    def start(self) -> None:
        # The protocol's own output bound is gone with it: the pipe has its own.
        try:
            self.transport.unregisterProducer()
        except RuntimeError:
            pass
        self.transport.registerProducer(self, True)

    # IPushProducer: the socket tells of a client that stops reading.

    def pauseProducing(self) -> None:
        self.output.pauseProducing()
        if not self.paused and not self.done and self.link is not None:
            self.paused = True
            self.link.flow(True)

    def resumeProducing(self) -> None:
        self.output.resumeProducing()
        if self.paused and not self.done and self.link is not None:
            self.paused = False
            self.link.flow(False)

    def stopProducing(self) -> None:
        self.output.stopProducing()

    # ClientRelay: what the protocol (on its socket) passes on.

    def from_client(self, data: bytes) -> None:
        if not self.done and self.link is not None:
            self.link.send(data)

    def client_lost(self, reason: Failure | None) -> None:
        if self.done:
            return
        self.done = True
        if self.link is not None:
            text = reason.getErrorMessage() if reason is not None else "Connection closed"
            self.link.close(text)
        # Nothing refers back to the protocol from here on.
        self.protocol.relay = None

    # RelayEnd: what the cluster passes on from A.

    def received(self, data: bytes, late: float = 0.0) -> None:
        if self.done or not getattr(self.transport, "connected", True):
            return
        if not self.output.write(self.transport, data):
            log.info("relayed client: output backlog full, dropped")
            self.done = True
            if self.link is not None:
                self.link.close("Output backlog full", abort=True)
            self.transport.abortConnection()

    def ended(self, how: str, reason: str) -> None:
        if self.done:
            return
        self.done = True
        if how == ABORTED:
            self.transport.abortConnection()
            return
        if how == LOST:
            farewell = getattr(self.protocol, "relay_farewell", None)
            data = farewell(reason) if farewell is not None else None
            if data:
                self.output.write(self.transport, data)
        close.close(self.transport, self.clock)

    def flow(self, paused: bool) -> None:
        """Only the serving node is told of the flow."""


@implementer(ITransport, IPushProducer)
class RelayTransport:
    """Node A's end: the transport of a protocol whose client's socket is on another node.

    It starts paused: what comes from the client waits (after ``state["pending"]``) until
    the protocol calls ``resumeProducing``, once it has resumed the login.
    """

    disconnecting = False

    def __init__(self, link: RelayLink, state: dict[str, Any], clock: Any) -> None:
        self.link = link
        self.clock = clock
        self.protocol: Any = None
        self.connected = True
        self.TLS = bool(state.get(TLS))
        if self.TLS:
            alsoProvides(self, ISSLTransport)
        address = str(state.get(ADDRESS) or "")
        # What protocols.transport.peer.address_of reads first.
        self.client = (address, 0)
        self._peer = _address(address)
        self.producer: Any = None
        self._paused = True
        pending = state.get(PENDING) or b""
        self._held: list[bytes] = [bytes(pending)] if pending else []
        # What the protocol's flood budget credits (protocols.transport.stall.stalls_of):
        # the reactor's stalls, and the time the client's bytes waited in the cluster.
        self.input_stalls = InputStalls(watch_for(clock))

    # ITransport

    def write(self, data: bytes) -> None:
        if self.connected and not self.disconnecting and data:
            self.link.send(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._close(abort=False)

    def abortConnection(self) -> None:
        self._close(abort=True)

    def getPeer(self) -> IPv4Address | IPv6Address:
        return self._peer

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "0.0.0.0", 0)

    def getPeerCertificate(self) -> None:
        """ISSLTransport: the certificate stayed with the socket (its fingerprint is in
        the state)."""
        return None

    def setTcpNoDelay(self, enabled: bool) -> None:
        """The socket is on the other node, which set it."""

    # IConsumer: the protocol's output producer, paused while the client's socket on the
    # other node takes no more (``flow``).

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    # IPushProducer: reading from the client.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self.abortConnection()

    # RelayEnd: what the cluster passes on from the client's node.

    def received(self, data: bytes, late: float = 0.0) -> None:
        if not self.connected:
            return
        # What the client sent meanwhile comes in one go: its flood budget is credited the
        # wait, as for a stall of this process.
        self.input_stalls.delayed(late, self.clock.seconds())
        if self._paused or self.protocol is None or self._held:
            self._held.append(data)
            return
        self._deliver(data)

    def attach(self, protocol: Any) -> None:
        """``protocol`` (the one ``resume`` returned) reads what comes from now on (what was
        held too, if it has resumed reading already)."""
        self.protocol = protocol
        if not self._paused:
            self._flush()

    def flow(self, paused: bool) -> None:
        producer = self.producer
        if producer is None or not self.connected:
            return
        if paused:
            producer.pauseProducing()
        else:
            producer.resumeProducing()

    def ended(self, how: str, reason: str) -> None:
        if not self.connected:
            return
        self._held.clear()
        self._lost(ConnectionDone(reason) if how == CLOSED else ConnectionLost(reason))

    # -- inside --------------------------------------------------------------------------------

    def _flush(self) -> None:
        # Held until the protocol is known: a resume may resume reading before it returns.
        while self._held and not self._paused and self.connected and self.protocol is not None:
            self._deliver(self._held.pop(0))

    def _deliver(self, data: bytes) -> None:
        protocol = self.protocol
        try:
            protocol.dataReceived(data)
        except Exception:
            log.failure("relayed client: dataReceived")
            self.abortConnection()

    def _close(self, *, abort: bool) -> None:
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        self.link.close("closed by the server", abort=abort)
        # As a socket's close is reported on a later turn, not inside the call.
        error = ConnectionLost("aborted") if abort else ConnectionDone("closed")
        self.clock.callLater(0, self._lost, error)

    def _lost(self, error: Exception) -> None:
        if not self.connected:
            return
        self.connected = False
        self._held.clear()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            try:
                protocol.connectionLost(Failure(error))
            except Exception:
                log.failure("relayed client: connectionLost")


def _address(address: str) -> IPv4Address | IPv6Address:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return IPv4Address("TCP", address or "0.0.0.0", 0)
    if isinstance(ip, ipaddress.IPv6Address):
        return IPv6Address("TCP", address, 0)
    return IPv4Address("TCP", address, 0)
