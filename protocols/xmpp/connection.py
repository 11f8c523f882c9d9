"""One client-to-server XMPP stream: negotiation (STARTTLS, SASL, bind), then stanzas.

The connection owns the stream's state and its framing; what a stanza means is decided by the
handlers in the :mod:`protocols.xmpp.router` table, and how a core event looks in XMPP by
:mod:`protocols.xmpp.render`.  Handlers use the attributes and methods documented on
:class:`XmppConnection` and nothing else of it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.auth.sasl import SaslServer
from chatserver.core.errors import AccountError, Banned, LimitExceeded
from chatserver.core.events import REVOKED_REASONS, DropKind, MessageBatch, each_message
from chatserver.core.interfaces import IChatClient
from protocols import connlog
from protocols.transport import close, peer
from protocols.transport.flood import FloodQueue, budget_for
from protocols.transport.idle import IdleTimer
from protocols.transport.output import BoundedOutput
from protocols.xmpp import (
    bind,
    caps,
    csi,
    handoff,
    presence,
    register,
    render,
    router,
    sasl,
    sm,
    stanzas,
)
from protocols.xmpp.jid import address_of, parse_jid, try_parse, user_jid
from protocols.xmpp.stanzas import NS_CLIENT, NS_SASL, NS_STREAM_ERRORS, NS_STREAMS, NS_TLS
from protocols.xmpp.stream import StreamClosed, StreamError, StreamOpened, StreamParser

if TYPE_CHECKING:
    from chatserver.core.events import Who
    from chatserver.core.service import ChatService
    from chatserver.core.views import Session, UserView
    from protocols.transport.handoff import ClientRelay
    from protocols.xmpp.factory import XmppFactory

log = Logger()

XML_LANG = f"{{{stanzas.NS_XML}}}lang"

_ping_ids = itertools.count(1)

# Output allowed to pile up while the peer does not read (after the transport has asked us to
# pause); past it the connection is dropped rather than grow memory or stall others.
MAX_BACKLOG = 1 << 20

# A stream silent this long between stanzas gives its parser back (StreamParser.park): a
# parser holds about 10 KiB, and making a new one costs some 30 microseconds.
PARK_AFTER = 1.0

# Stream states, in the order a stream goes through them.
OPENING = "opening"  # waiting for the client's stream header
NEGOTIATING = "negotiating"  # before authentication (STARTTLS, SASL, in-band registration)
AUTHENTICATED = "authenticated"  # SASL done, waiting for resource binding
BOUND = "bound"  # a full JID: stanzas flow
# The connection dropped, the session waits to be resumed (XEP-0198): still in its rooms,
# what it receives is queued.
DETACHED = "detached"
CLOSED = "closed"
# A stream that resumed another session: it only carries that session's traffic.
CARRIER = "carrier"


@implementer(IChatClient)
class XmppConnection(Protocol):
    """An XMPP client connection, as handlers see it.

    Attributes for handlers:

    * ``service`` (ChatService), ``core`` (the core Connection), ``user`` (core User or None),
      ``config`` (XmppConfig), ``factory`` (XmppFactory: sessions, roster store);
    * ``domain`` and ``muc_domain``; ``account`` (str or None, once authenticated);
    * ``jid`` (the bound full JID, e.g. ``alice@localhost/phone``), ``bare_jid``, ``resource``;
    * ``secure`` (TLS, or loopback), ``tls`` (TLS only);
    * ``lang``: the stream's default ``xml:lang`` (the client's header's, else ``en``), which
      stanzas relayed without one of their own are given (RFC 6120 §4.7.4);
    * ``quit_reason``: what the other protocols are told when the stream ends (set by a final
      unavailable presence; None: the stream just went away);
    * ``available`` (initial presence sent), ``presence_show``, ``presence_status``, and
      ``presence`` (the last available presence, serialized, for probes);
    * ``extra``: a dict where a module may keep per-connection state under its own key;
    * ``on_close``: callables run with the connection when it closes (before the core quit);
    * ``flood``: the flood queue; ``flood.charge(cost)`` takes flood tokens for what a stanza
      costs the server beyond its turn (it has a budget only once bound);
    * ``sm``: stream management state (:mod:`protocols.xmpp.sm`), None until enabled.

    A session with stream management outlives its TCP connection for a while (``DETACHED``),
    and a later stream may resume it (:meth:`take_over`): from then on this object writes to
    that stream's transport and reads what it parses, and the resuming connection is only its
    carrier.

    Methods: :meth:`send`, :meth:`send_error`, :meth:`iq_result`, :meth:`jid_of`,
    :meth:`occupant_jid`, :meth:`stream_error`.
    """

    protocol = "xmpp"
    # A room reflects an occupant's own message back (XEP-0045), with nothing that needs it
    # before the end of the reactor turn: it comes in the turn's batch, in its place.
    echo_at_turn_end = True
    echoes_own_messages = True
    # Set once the client is handed off to another node (protocols.transport.handoff).
    relay: ClientRelay | None = None

    # Slots: an idle connection is mostly this object, and ten thousand of them add up.
    __slots__ = (
        "_cork",
        "_csi_held",
        "_extra",
        "_held_input",
        "_on_close",
        "_output",
        "_quit_done",
        "_said_to_rooms",
        "_timer",
        "_via",
        "account",
        "address",
        "available",
        "bare_jid",
        "clock",
        "config",
        "connected",
        "core",
        "domain",
        "dropped",
        "factory",
        "flood",
        "header_sent",
        "jid",
        "lang",
        "loopback",
        "muc_domain",
        "parser",
        "presence",
        "presence_show",
        "presence_status",
        "quit_reason",
        "resource",
        "sasl",
        "service",
        "session_started",
        "sm",
        "state",
        "stream_id",
        "tls",
        "transport",
    )

    def __init__(self, factory: XmppFactory) -> None:
        # Twisted's Protocol keeps these as class attributes; slots need them set here.
        self.transport: Any = None
        self.connected = 0
        self.factory = factory
        self.service: ChatService = factory.service
        self.config = factory.config
        self.domain: str = factory.config.domain.lower()
        self.muc_domain: str = factory.config.muc_service.lower()
        self.clock = factory.clock
        self.core: Session | None = None
        self.address = ""
        self.tls = False
        self.loopback = False
        self.state = OPENING
        self.stream_id = ""
        self.lang = "en"
        self.header_sent = False
        self.account: str | None = None
        self.resource: str | None = None
        self.jid: str | None = None
        self.bare_jid: str | None = None
        self.available = False
        self.presence_show: str | None = None
        self.presence_status: str | None = None
        self.presence: bytes | None = None
        self.quit_reason: str | None = None
        # Set when the server closes the stream for flooding or a full output backlog.
        self.dropped: DropKind | None = None
        self.session_started = False
        # Made when a module first asks for them: most connections never do.
        self._extra: dict[str, Any] | None = None
        self._on_close: list[Callable[[XmppConnection], None]] | None = None
        self.sasl: SaslServer | None = None
        self.parser = StreamParser(factory.stream_limits)
        # One timer serves the login deadline, parking the parser once the stream has been
        # quiet a moment, the idle ping and the wait for its answer.
        self._timer = IdleTimer(self.clock, self, quiet_after=PARK_AFTER, on_quiet=self._park)
        self._quit_done = False
        self._output = BoundedOutput(MAX_BACKLOG)
        # While a batch is rendered: its stanzas, written as one.
        self._cork: list[bytes] | None = None
        # A groupchat message of this client was handled and its reflection may wait in the
        # turn's batch (echo_at_turn_end): see _dispatch.
        self._said_to_rooms = False
        # Flood control once bound (the budget is made then): stanzas past it wait their turn.
        self.flood: FloodQueue[etree._Element] = FloodQueue(
            self.clock, None, factory.config.flood_max_queue, self._dispatch
        )
        self.sm: sm.StreamManagement | None = None
        # While the client says it is inactive (XEP-0352): the stanzas held back (else None).
        self._csi_held: csi.Held | None = None
        # The connection that resumed this session and carries it now (None: its own), or,
        # on that connection, the session it carries.
        self._via: XmppConnection | None = None
        # While the login after SASL waits for its outcome: what the client sent meanwhile.
        self._held_input: list[bytes] | None = None

    # -- what handlers use --------------------------------------------------------------------

    @property
    def user(self) -> UserView | None:
        return self.core.user if self.core is not None else None

    @property
    def secure(self) -> bool:
        return self.tls or self.loopback

    @property
    def extra(self) -> dict[str, Any]:
        if self._extra is None:
            self._extra = {}
        return self._extra

    @property
    def on_close(self) -> list[Callable[[XmppConnection], None]]:
        if self._on_close is None:
            self._on_close = []
        return self._on_close

    def send(self, data: etree._Element | bytes) -> None:
        """Write one element (serialized here) or ready bytes to the client.

        Once bound, each call is one stanza: counted for stream management, held back while
        the client is inactive if it is not urgent."""
        if self.state == CLOSED:
            return
        if not isinstance(data, bytes):
            data = stanzas.to_bytes(data)
        if self._cork is not None:
            self._cork.append(data)
            return
        held = self._csi_held
        if held is not None:
            if not csi.urgent(self, data):
                held.add(data)
                if held.live > self.config.csi_max_held:
                    self._flush_held()
                return
            self._flush_held()
        self._send_stanza(data)

    def _send_stanza(self, data: bytes) -> None:
        state = self.sm
        if state is not None:
            if not sm.record(self, state, data, self.clock.seconds()):
                self._unacked_overflow()
        self.write_unchecked(data)
        if state is not None and sm.should_request(state):
            self.request_ack()

    def write_nonza(self, data: bytes) -> None:
        """Write a stream-level element that is not a stanza (not counted, never held)."""
        self.write_unchecked(data)

    def write_unchecked(self, data: bytes) -> None:
        """Write bytes as they are (a detached session writes nothing)."""
        if self.state == CLOSED or self.transport is None or not data:
            return
        if not self._output.write(self.transport, data):
            log.info("xmpp output backlog full for {who}", who=self.jid or self.address)
            self.quit_reason = "Output backlog full"
            self.dropped = "slow_reader"
            self.state = CLOSED
            self._cancel_timers()
            self.transport.abortConnection()

    def send_error(
        self,
        stanza: etree._Element,
        error_type: str,
        condition: str,
        text: str | None = None,
    ) -> None:
        """Answer ``stanza`` with a stanza error: same id, from/to swapped.

        Errors are never answered with errors (RFC 6120 §8.1), so an error stanza is dropped.
        """
        if stanza.get("type") == "error":
            return
        self.send(stanzas.error_reply(stanza, error_type, condition, text))

    def iq_result(self, stanza: etree._Element, payload: etree._Element | None = None) -> None:
        """Answer an IQ get or set with a result, carrying ``payload`` if given."""
        reply = stanzas.iq("result", stanza.get("id") or "", to=stanza.get("from"))
        if stanza.get("to"):
            reply.set("from", stanza.get("to"))
        if payload is not None:
            reply.append(payload)
        self.send(reply)

    def jid_of(self, who: Who) -> str:
        """The bare JID that stands for a core user: its account's, or its guest address."""
        return address_of(who, self.domain)

    def occupant_jid(self, room: str, nick: str) -> str:
        """``room@muc_domain/nick``."""
        return f"{room}@{self.muc_domain}/{nick}"

    def stream_error(self, condition: str, text: str | None = None, app: bytes = b"") -> None:
        """End the stream with an RFC 6120 §4.9 error (a header first if none was sent);
        ``app`` is an application-specific condition element, serialized."""
        if self.state == CLOSED:
            return
        if self.transport is None:
            # A detached session has no stream to write to; it just ends.
            self._close()
            return
        if not self.header_sent:
            self._send_header(None)
        log.info(
            "xmpp stream error {condition} to {who} ({address})",
            condition=condition,
            who=self.jid or self.account or "-",
            address=self.address,
        )
        self.transport.write(self._stream_error_bytes(condition, text, app))
        self._close()

    @staticmethod
    def _stream_error_bytes(condition: str, text: str | None, app: bytes = b"") -> bytes:
        """A stream error and the stream's end."""
        body = f"<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/>" + app.decode("utf-8")
        if text:
            safe = escape(stanzas.xml_safe(text))
            body += f"<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>{safe}</text>"
        return (body + "</stream:error></stream:stream>").encode("utf-8")

    # -- IChatClient ----------------------------------------------------------------------------

    def deliver(self, event: Any) -> None:
        if self.state != BOUND and self.state != DETACHED:
            return
        render.deliver(self, event)

    def deliver_batch(self, batch: MessageBatch) -> None:
        """A room's messages of one reactor turn: rendered one by one, written at once."""
        if self.state != BOUND and self.state != DETACHED:
            return
        self._cork = []
        try:
            for msg in each_message(batch.messages):
                render.deliver(self, msg)
        finally:
            out, self._cork = self._cork, None
        if not out:
            return
        if self.sm is None and self._csi_held is None:
            self.write_unchecked(b"".join(out))
            return
        if self._csi_held is not None:
            for data in out:
                self.send(data)
            return
        state = self.sm
        assert state is not None
        now = self.clock.seconds()
        for data in out:
            if not sm.record(self, state, data, now):
                self._unacked_overflow()
        self.write_unchecked(b"".join(out))
        if sm.should_request(state):
            self.request_ack()

    def hold_output(self) -> None:
        self._output.hold()

    def let_output_go(self) -> None:
        self._output.let_go(self.transport)

    def disconnect(self, reason: str) -> None:
        # After a colon come someone's own words (a ban's or a kill's reason): "shut up" there
        # is no shutdown.
        lowered = reason.partition(":")[0].lower()
        if reason in REVOKED_REASONS:
            # The account's credentials no longer hold (RFC 6120 4.9.3.19, XEP-0077 3.2).
            self.stream_error("not-authorized", reason)
        elif "shut" in lowered or "restart" in lowered:
            self.stream_error("system-shutdown", reason)
        else:
            self.stream_error("policy-violation", reason)

    # -- Twisted --------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        self.stream_id = os.urandom(8).hex()
        self.opened(peer.address_of(transport), peer.is_tls(transport))

    def opened(self, address: str, tls: bool) -> bool:
        """The connection is made from ``address`` (encrypted: ``tls``): the core is told,
        the login deadline starts.  Also the start of a stream handed off from another node
        of a cluster, whose client is at ``address`` there.  False: refused (the stream is
        closed with an error)."""
        transport = self.transport
        transport.registerProducer(self._output, True)
        peer.set_no_delay(transport)
        self.address = address
        self.loopback = peer.is_loopback(address)
        self.tls = tls
        try:
            self.core = self.service.connect(self)
        except Banned as err:
            # The core logs the bans it meets at login; one met this early is logged here.
            log.info("banned {address} (xmpp) by {mask}", address=self.address, mask=err.mask)
            self.stream_error("policy-violation", err.reason)
            return False
        except LimitExceeded as err:
            self.stream_error("policy-violation", str(err))
            return False
        connlog.opened("xmpp", self.core.id, self.address, self.tls)
        # Silence is not the only way to hold a connection: a byte now and then (slowloris)
        # keeps the idle timer happy, so logging in has a deadline of its own.
        self._timer.start(deadline=self.config.negotiation_timeout)
        self._timer.touch(self.clock.seconds())
        # Elements before login count too (a fresh budget comes with the bound resource).
        self.flood.budget = budget_for(
            self.transport, self.config.flood_burst, self.config.flood_rate, self.clock
        )
        return True

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            # Handed off to another node (protocols.transport.handoff): a pipe to it.
            self.relay.from_client(data)
            return
        # Room messages of a reactor turn reach the other members together (one write each).
        with self.service.batch():
            session = self._via if self.state == CARRIER else None
            if session is not None:
                if session._via is self:
                    session._data_received(data)
                return
            self._data_received(data)

    def _data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self._timer.touch(self.clock.seconds())
        held = self._held_input
        if held is not None:
            held.append(data)
            if sum(map(len, held)) > self.factory.stream_limits.stanza_bytes:
                self.stream_error("policy-violation", "too much input before the login's outcome")
            return
        try:
            for event in self.parser.feed(data):
                # A <resume/> hands the rest of the input to the session it resumed.
                conn = self._via if self.state == CARRIER and self._via is not None else self
                if conn.state == CLOSED or conn.state == CARRIER:
                    return
                if isinstance(event, StreamOpened):
                    conn._stream_opened(event)
                elif isinstance(event, StreamClosed):
                    conn._stream_closed()
                else:
                    conn._element(event.element)
        except StreamError as err:
            conn = self._via if self.state == CARRIER and self._via is not None else self
            conn.stream_error(err.condition, err.text)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.relay is not None:
            self.relay.client_lost(reason)
            return
        if self.state == CARRIER:
            # The stream that carried a resumed session is gone: the session detaches.
            session, self._via = self._via, None
            self.state = CLOSED
            self.parser.release()
            if session is not None and session._via is self:
                session._via = None
                session._transport_gone()
            self._forget()
            return
        if self._via is not None or self.state == DETACHED:
            # This object's own first connection, long since replaced or given up.
            return
        self._transport_gone()

    def _transport_gone(self) -> None:
        if self.state == BOUND and self.sm is not None and self.sm.id is not None:
            self._detach()
            return
        self.state = CLOSED
        self._cancel_timers()
        self.parser.release()
        self._leave()
        self._forget()

    # -- stream management: detaching and resuming -------------------------------------------

    def is_bound(self) -> bool:
        return self.state == BOUND

    def is_authenticated(self) -> bool:
        """Authenticated and not bound yet (where a session may be resumed)."""
        return self.state == AUTHENTICATED

    def request_ack(self) -> None:
        state = self.sm
        if state is not None and state.queue and self.transport is not None:
            state.requested = True
            self.write_nonza(sm.nonza("r"))

    def _detach(self) -> None:
        """The connection is gone; the session waits ``resume_timeout`` to be resumed."""
        state = self.sm
        assert state is not None
        self._flush_held()
        self._csi_held = None
        self.state = DETACHED
        self.transport = None
        self._via = None
        self._cork = None
        self._cancel_timers()
        self.parser.release()
        state.requested = False
        state.timer = self.clock.callLater(state.timeout, self._resume_expired)
        log.info("xmpp session {jid} detached, resumable", jid=self.jid)

    def _resume_expired(self) -> None:
        if self.sm is not None:
            self.sm.timer = None
        if self.state != DETACHED:
            return
        self.quit_reason = self.quit_reason or "Connection lost"
        self.state = CLOSED
        self._leave()
        self._forget()

    def take_over(self, carrier: XmppConnection) -> None:
        """A new stream resumed this session: from now on it carries this session's traffic."""
        state = self.sm
        assert state is not None
        if self.state == BOUND:
            # The old connection has not noticed it is dead yet (the usual case): drop it.
            old = self.transport
            previous = self._via
            self._via = None
            self._detach()
            if previous is not None:
                previous._via = None
            if old is not None:
                old.abortConnection()
        timer, state.timer = state.timer, None
        if timer is not None and timer.active():  # type: ignore[attr-defined]
            timer.cancel()  # type: ignore[attr-defined]
        # The carrier's own core connection (logged in, never bound) is not needed.
        carrier._cancel_timers()
        if carrier.core is not None and not carrier._quit_done:
            carrier._quit_done = True
            self.service.quit(carrier.core, "Session resumed")
        carrier.state = CARRIER
        carrier._via = self
        self._via = carrier
        self.transport = carrier.transport
        self._output = carrier._output
        self.parser = carrier.parser
        self.address = carrier.address
        self.tls = carrier.tls
        self.loopback = carrier.loopback
        self.stream_id = carrier.stream_id
        self.header_sent = True
        self.state = BOUND
        self._timer.start()
        self._timer.touch(self.clock.seconds())

    def _unacked_overflow(self) -> None:
        # Reached while the core delivers an event: the session ends once that is done.
        state = self.sm
        if state is None or state.overflow:
            return
        state.overflow = True
        log.info("xmpp unacknowledged queue full for {jid}", jid=self.jid)
        self.quit_reason = "Too many unacknowledged stanzas"
        self.clock.callLater(0, self._end_overflowed)

    def _end_overflowed(self) -> None:
        if self.state == DETACHED:
            self._resume_expired()
        else:
            self.stream_error("policy-violation", "too many unacknowledged stanzas")

    # -- client state indication ---------------------------------------------------------------

    @property
    def inactive(self) -> bool:
        return self._csi_held is not None

    def set_inactive(self, inactive: bool) -> None:
        if inactive:
            if self._csi_held is None:
                self._csi_held = csi.Held()
        else:
            self._flush_held()
            self._csi_held = None

    def _flush_held(self) -> None:
        held = self._csi_held
        if held is None or not held.live:
            return
        # One write: what waited reaches the client in one wake-up.
        out = held.take()
        state = self.sm
        if state is not None:
            now = self.clock.seconds()
            for data in out:
                if not sm.record(self, state, data, now):
                    self._unacked_overflow()
        self.write_unchecked(b"".join(out))
        if state is not None and sm.should_request(state):
            self.request_ack()

    def _leave(self) -> None:
        """The session is over for everyone else: its presence, its rooms, its user."""
        if self._quit_done:
            return
        self._quit_done = True
        for callback in self._on_close or ():
            try:
                callback(self)
            except Exception:
                log.failure("closing {jid}", jid=self.jid)
        sm.forget(self)
        render.keep_held_offline(self)
        if self.jid is not None:
            if self.available:
                presence.went_offline(self)
            self.factory.remove_session(self)
        if self.core is not None:
            user = self.core.user
            nick = user.nick if user is not None and self.jid is not None else None
            reason = self.quit_reason or "Disconnected"
            self.service.quit(self.core, reason, dropped=self.dropped)
            connlog.closed("xmpp", self.core.id, self.address, nick, reason)

    # -- stream negotiation ---------------------------------------------------------------------

    def _send_header(self, to: str | None) -> None:
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.transport.write(
            (
                "<?xml version='1.0'?>"
                f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'"
                f" id='{self.stream_id}' from={quoteattr(self.domain)}{to_attr}"
                " version='1.0' xml:lang='en'>"
            ).encode()
        )
        self.header_sent = True

    def _stream_opened(self, event: StreamOpened) -> None:
        attrib = event.attrib
        client = try_parse(attrib.get("from"))
        # Every stream (the first and each restart) gets its own header and id.
        self.stream_id = os.urandom(8).hex()
        self._send_header(str(client) if client is not None else None)
        qname = etree.QName(event.tag)
        if qname.localname != "stream" or qname.namespace != NS_STREAMS:
            self.stream_error("invalid-namespace", "the stream element is stream:stream")
            return
        if event.nsmap.get(None) != NS_CLIENT:
            self.stream_error("invalid-namespace", "this is a client-to-server port")
            return
        to = attrib.get("to")
        if to is not None and to.lower().rstrip(".") != self.domain:
            self.stream_error("host-unknown", f"this server serves {self.domain}")
            return
        self.lang = attrib.get(XML_LANG) or "en"
        version = attrib.get("version", "")
        if not version.startswith("1."):
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        if self.state == OPENING:
            self.state = NEGOTIATING
        self.send(self._features())

    def _stream_closed(self) -> None:
        if self.state != CLOSED:
            self.transport.write(b"</stream:stream>")
            self._close()

    def tls_required(self) -> bool:
        """Whether this stream must be encrypted before authentication."""
        if self.tls or not self.config.require_tls:
            return False
        return not self.loopback or self.config.require_tls_on_loopback

    def tls_offered(self) -> bool:
        # A WebSocket stream cannot start TLS inside itself (wss:// is TLS from the start).
        return (
            not self.tls
            and self.factory.tls_options is not None
            and hasattr(self.transport, "startTLS")
        )

    def registration_open(self) -> bool:
        return self.factory.registration_open()

    def _features(self) -> bytes:
        parts: list[etree._Element] = []
        if self.state == NEGOTIATING:
            if self.tls_offered():
                tls = stanzas.element("starttls", ns=NS_TLS)
                if self.tls_required():
                    stanzas.sub(tls, "required")
                parts.append(tls)
            if not self.tls_required():
                mechs = stanzas.element("mechanisms", ns=NS_SASL)
                for name in sasl.mechanisms(self):
                    stanzas.sub(mechs, "mechanism", text=name)
                parts.append(mechs)
                if self.registration_open():
                    parts.append(stanzas.element("register", ns=stanzas.NS_REGISTER_FEATURE))
        elif self.state == AUTHENTICATED:
            parts.append(stanzas.element("bind", ns=stanzas.NS_BIND))
            session = stanzas.element("session", ns=stanzas.NS_SESSION)
            stanzas.sub(session, "optional")
            parts.append(session)
            parts.append(stanzas.element("sm", ns=sm.NS_SM))
            parts.append(stanzas.element("csi", ns=csi.NS_CSI))
            parts.append(caps.stream_feature(self.factory))
            parts.append(stanzas.element("ver", ns=stanzas.NS_ROSTER_VER))
        body = b"".join(stanzas.to_bytes(p) for p in parts)
        return b"<stream:features>" + body + b"</stream:features>"

    def restart_stream(self) -> None:
        """After STARTTLS or SASL success: a fresh parser; the client sends a new header."""
        self.parser.reset()

    def start_tls(self) -> None:
        options = self.factory.tls_options
        if self.tls or options is None or self.state != NEGOTIATING:
            self.transport.write(f"<failure xmlns='{NS_TLS}'/></stream:stream>".encode())
            self._close()
            return
        self.transport.write(f"<proceed xmlns='{NS_TLS}'/>".encode())
        self.transport.startTLS(options())
        self.tls = True
        self.restart_stream()

    def authenticated(self, account: str, success: bytes | None = None) -> Deferred:
        """SASL proved ``account``: log the connection in to it (in cluster mode once the
        account is claimed), then send ``<success/>`` carrying ``success`` (the mechanism's
        final data).  What the client sends while the login is pending waits for its outcome.

        Fires True when logged in, False otherwise: a server ban refuses the account (the
        stream is closed then, with ``<policy-violation/>`` and the ban's reason); the
        account's user is on another node of the cluster (the stream is handed off there,
        or, when it cannot be, closed with ``<conflict/>``); the cluster cannot confirm the
        account now (``<temporary-auth-failure/>``: the client may try again)."""
        assert self.core is not None
        self._held_input = []
        d = self.service.log_in(self.core, account)
        d.addCallbacks(
            self._logged_in,
            self._not_logged_in,
            callbackArgs=(account, success),
            errbackArgs=(account, success),
        )
        return d

    def _release_input(self) -> None:
        """The login has its outcome: what the client sent meanwhile is read now."""
        held, self._held_input = self._held_input, None
        if held:
            with self.service.batch():
                self._data_received(b"".join(held))

    def _logged_in(self, _: object, account: str, success: bytes | None) -> bool:
        if self.state != NEGOTIATING:
            return False
        self.account = account
        self.state = AUTHENTICATED
        self.sasl = None
        self.restart_stream()
        sasl.succeeded(self, success)
        self._release_input()
        return True

    def _not_logged_in(self, failure: Failure, account: str, success: bytes | None) -> bool:
        failure.trap(Banned, AccountError)
        err = failure.value
        if self.state == CLOSED:
            return False
        if isinstance(err, AccountError) and err.code == AccountError.UNAVAILABLE:
            sasl.fail(self, "temporary-auth-failure", err.reason)
            self._release_input()
            return False
        if isinstance(err, Banned):
            # The core has logged the ban and told this connection (disconnect); this only
            # makes sure the stream ends even if it had not.
            self.stream_error("policy-violation", err.reason)
            return False
        if err.node is not None and handoff.hand_off(
            self, err.node, err.account or account, success
        ):
            return False
        # The account is online on another node of a cluster, and this stream cannot be
        # handed off there: a new stream for it here would conflict with that one
        # (RFC 6120 §4.9.3.3).
        self.stream_error("conflict", err.reason)
        return False

    def take_held_input(self) -> bytes:
        """What the client sent since the login started, taken from this connection."""
        held, self._held_input = self._held_input, None
        return b"".join(held or ())

    def quiesce(self, account: str) -> None:
        """Handed off to another node: this object stops, and its core connection (logged
        in to nothing, so nobody sees it) goes, while the socket stays open for the relay."""
        self.state = CLOSED
        self._quit_done = True
        self._cancel_timers()
        # Reset, not only released: a parse under way (a login that failed at once) stops.
        self.parser.reset()
        core = self.core
        if core is not None:
            self.service.handed_off(core, account)
            connlog.closed("xmpp", core.id, self.address, None, "handed off to another server")
        self._forget()

    def relay_farewell(self, reason: str) -> bytes:
        """Handed off, and the node that served the stream is gone: the stream ends with
        this (written by the node that has the socket; the client may log in again)."""
        return self._stream_error_bytes(
            "system-shutdown", f"the server of your session is gone ({reason}); log in again"
        )

    def bound(self, resource: str) -> None:
        """Resource binding succeeded (the core user is attached)."""
        assert self.account is not None
        self.resource = resource
        self.bare_jid = user_jid(self.account, self.domain)
        self.jid = f"{self.bare_jid}/{resource}"
        self.state = BOUND
        self.factory.add_session(self)
        self._timer.deadline = None
        config = self.config
        self.flood.budget = budget_for(
            self.transport, config.flood_burst, config.flood_rate, self.clock
        )

    # -- elements -------------------------------------------------------------------------------

    def _element(self, el: etree._Element) -> None:
        tag = el.tag
        if not isinstance(tag, str):
            return
        budget = self.flood.budget
        if self.state != BOUND and budget is not None and not budget.take():
            # A login takes a handful of elements; the budget is for whole sessions.
            self.stream_error("policy-violation", "too many elements before login")
            return
        qname = etree.QName(tag)
        ns = qname.namespace
        if ns is None and qname.localname in stanzas.STANZA_KINDS:
            self._stanza(el)
        elif ns == NS_TLS and qname.localname == "starttls":
            self.start_tls()
        elif ns == NS_SASL:
            if self.state != NEGOTIATING:
                self.stream_error("unsupported-stanza-type", "already authenticated")
            else:
                sasl.handle(self, el)
        elif ns == sm.NS_SM and self.state in (AUTHENTICATED, BOUND):
            sm.handle(self, el)
        elif ns == csi.NS_CSI and self.state == BOUND:
            csi.handle(self, el)
        elif ns == NS_STREAMS and qname.localname == "error":
            log.info("xmpp stream error from {address}", address=self.address)
            self._stream_closed()
        else:
            self.stream_error("unsupported-stanza-type", None)

    def _stanza(self, stanza: etree._Element) -> None:
        if self.state == NEGOTIATING:
            if self._preauth_register(stanza):
                return
            self.stream_error("not-authorized", "authenticate first")
            return
        if self.state == AUTHENTICATED:
            bind.before_bind(self, stanza)
            return
        if self.state != BOUND:
            return
        if not self._stamp_from(stanza):
            self._handled()
            return
        self._admit(stanza)

    def _handled(self) -> None:
        """One more stanza from the client handled (XEP-0198's h)."""
        state = self.sm
        if state is not None:
            state.handled = (state.handled + 1) % sm.MODULO

    def _admit(self, stanza: etree._Element) -> None:
        """Dispatch while the flood budget allows; past it the stanza waits its turn (in
        order), and a client that keeps too many waiting is a flood."""
        flood = self.flood
        flood.push(stanza)
        flood.drain()
        if flood.overflowing:
            flood.clear()
            log.info("xmpp flood from {who}", who=self.jid or self.address)
            self.quit_reason = "Excess flood"
            self.dropped = "flood"
            self.stream_error("policy-violation", "too many stanzas at once")

    def _dispatch(self, stanza: etree._Element) -> None:
        if self.state == BOUND:
            self._handled()
            if stanza.tag == "message" and stanza.get("type") == "groupchat":
                self._said_to_rooms = True
            elif self._said_to_rooms:
                # The reflections of the groupchat messages before it come first, as the
                # client sent them (a client pings to learn they were handled): the turn's
                # batch goes now, not at the end of the turn.
                self._said_to_rooms = False
                self.service.deliver_turn()
            router.dispatch(self, stanza)

    def _preauth_register(self, stanza: etree._Element) -> bool:
        if stanzas.kind_of(stanza) != "iq" or self.tls_required():
            return False
        query = stanzas.payload(stanza)
        if query is None or etree.QName(query).namespace != stanzas.NS_REGISTER:
            return False
        router.call(self, register.handle_preauth, stanza)
        return True

    def _stamp_from(self, stanza: etree._Element) -> bool:
        given = stanza.get("from")
        if given is not None and given != self.jid:
            jid = try_parse(given)
            if (
                jid is None
                or jid.bare != self.bare_jid
                or jid.resource not in (None, self.resource)
            ):
                self.stream_error("invalid-from", None)
                return False
        assert self.jid is not None
        stanza.set("from", self.jid)
        to = stanza.get("to")
        if to is not None:
            # A normalized address (case of the localpart and domain), so handlers compare
            # plain strings.
            try:
                stanza.set("to", str(parse_jid(to)))
            except ValueError:
                self.send_error(stanza, "modify", "jid-malformed")
                return False
        return True

    # -- keep-alive -----------------------------------------------------------------------------

    # The idle timer (IdleOwner).

    def idle_after(self) -> float:
        return self.config.idle_timeout

    def answer_within(self) -> float:
        return self.config.ping_timeout

    def send_probe(self) -> None:
        """Silent for a while: ask with an XEP-0199 ping (to any client that is bound)."""
        if self.state == BOUND:
            ping = stanzas.iq("get", f"ping-{next(_ping_ids)}", to=self.jid, from_=self.domain)
            stanzas.sub(ping, "ping", ns=stanzas.NS_PING)
            self.send(ping)
            if self.sm is not None and not self.sm.requested:
                self.request_ack()
        else:
            # A stream that never got as far as binding needs no patience; whitespace tells
            # whether the peer's TCP still answers.
            self.transport.write(b" ")

    def no_answer(self, silent: float) -> None:
        if self.state == BOUND and self.sm is not None and self.sm.id is not None:
            # A dead connection, most likely (a phone changing networks): the session waits
            # for its client to resume it.
            transport = self.transport
            previous, self._via = self._via, None
            if previous is not None:
                previous._via = None
            self._detach()
            transport.abortConnection()
            return
        self.stream_error("connection-timeout", "no answer to a ping")

    def deadline_passed(self) -> None:
        if self.state != BOUND:
            timeout = self.config.negotiation_timeout
            self.stream_error("connection-timeout", f"not logged in within {timeout:g} seconds")

    def _park(self) -> None:
        # Mid-stanza the parser stays: the next input offers it again.
        self.parser.park()

    def _cancel_timers(self) -> None:
        self._timer.stop()
        self.flood.clear()

    def _forget(self) -> None:
        # Nothing runs for this session any more: it lets go of what refers back to it (its
        # timer, its queue's handler, the core's connection), so that it is freed as soon as
        # nothing holds it, instead of by the garbage collector's next full collection.  A
        # Deferred still running for it finds no core connection, as before login.
        self._timer.forget()
        self.flood.forget()
        self.core = None

    def _close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._cancel_timers()
        # Closing in the middle of a TLS handshake (a refusal on the direct-TLS port) waits
        # for it to finish, so that the client reads why; a peer that never finishes it is
        # cut off by the TLS handshake timeout, or by the close's own bound.
        # Others see the session end now, not when the client gets round to closing.
        self._leave()
        if self.transport is not None:
            # What was held for the cluster goes before the close (see hold_output).
            self._output.let_all_go(self.transport)
            close.close(self.transport, self.clock)
