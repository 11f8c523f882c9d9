"""One IRC client connection: framing, flood control, timers, the per-command reply buffer,
and the IChatClient the core delivers events to.

Input is cut into lines (LF, with an optional CR before it), each line parsed once and queued.
Lines leave the queue while the connection's penalty budget (a token bucket) allows; the
excess waits, and a client that keeps the queue past its bound is closed with
``Excess Flood``.  Each command's replies go to a buffer that is flushed when the command
(or the Deferred it returned) is done, so that labeled-response and batch can wrap them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.core.errors import (
    ChatError,
    LimitExceeded,
)
from chatserver.core.events import DropKind, Event, Message, MessageBatch, Who
from chatserver.core.interfaces import IChatClient
from chatserver.core.records import RoomEventRecord
from protocols import connlog
from protocols.irc import caps, errors
from protocols.irc import numerics as n
from protocols.irc.commands import cost_of, dispatch
from protocols.irc.message import (
    IrcMessage,
    ParseError,
    escape_tag_value,
    parse,
    serialize,
    serialize_fitted,
)
from protocols.irc.render import history_lines, render, render_batch
from protocols.irc.services_registry import SERVICES
from protocols.transport import close, peer
from protocols.transport.flood import FloodQueue, budget_for
from protocols.transport.framing import TOO_LONG, LineSplitter, TooLong
from protocols.transport.idle import IdleTimer
from protocols.transport.output import BoundedOutput

if TYPE_CHECKING:
    from chatserver.core.views import Session, UserView
    from protocols.irc.factory import IrcFactory
    from protocols.transport.handoff import ClientRelay

log = Logger()

# Caps and metadata subscriptions are replaced as a whole, never changed in place: one empty
# set serves all.
_NO_CAPS: frozenset[str] = frozenset()


@implementer(IChatClient)
class IrcConnection(Protocol):
    """The twisted Protocol of one IRC client and the IChatClient the core talks to.

    Handlers use: ``service``, ``core``, ``user``, ``nick``, ``caps``, ``registered``,
    ``config``, ``server``, ``server_name``, ``is_oper``, ``secure``, ``address``, ``flood``
    (``flood.charge(cost)``: flood tokens for what a command costs beyond its table cost) and
    the reply methods below.
    """

    protocol = "irc"
    # Its own room messages come back at once, where a label or a reply can carry them.
    echo_at_turn_end = False
    # Set once the client is handed off to another node (protocols.transport.handoff).
    relay: ClientRelay | None = None

    # Slots: an idle connection is mostly this object, and ten thousand of them add up.
    __slots__ = (
        "_batch_ids",
        "_held",
        "_label",
        "_lines",
        "_lost",
        "_out",
        "_output",
        "_processing",
        "_timer",
        "account_numerics_sent",
        "address",
        "cap_bits",
        "cap_negotiating",
        "cap_version",
        "caps",
        "clock",
        "closing",
        "config",
        "core",
        "dropped",
        "factory",
        "flood",
        "ident",
        "in_command",
        "metadata_subs",
        "multiline",
        "pending_nick",
        "quit_nick",
        "quit_reason",
        "realname",
        "refused_nick",
        "registered",
        "sasl",
        "server",
        "server_name",
        "server_password_ok",
        "service",
        "services",
        "tls",
    )

    def __init__(self, factory: IrcFactory) -> None:
        self.factory = factory
        self.service = factory.service
        self.config = factory.config
        self.server = factory.server
        self.server_name: str = factory.server.name
        self.clock = self.service.clock
        self.core: Session | None = None
        self.address = ""
        self.tls = False
        # Set by WEBIRC: whether the user's own connection, to the gateway, counts as secure.
        self.gateway_secure: bool | None = None
        self.caps: AbstractSet[str] = _NO_CAPS
        # Metadata keys this client subscribed to (METADATA SUB).
        self.metadata_subs: frozenset[str] = _NO_CAPS
        self.cap_bits = 0
        self.cap_version = 0
        self.cap_negotiating = False
        self.registered = False
        # Registration state.
        self.pending_nick: str | None = None
        # The last nick refused as in use before registration (REGISTER names it then).
        self.refused_nick: str | None = None
        self.ident: str | None = None
        self.realname = ""
        # PASS matched [irc] password (when one is set, registration needs it).
        self.server_password_ok = False
        self.sasl: Any = None
        self.services = SERVICES
        self.closing = False
        self.quit_reason: str | None = None
        self.quit_nick: str | None = None
        # Set when the server closes the connection for flooding or a full SendQ.
        self.dropped: DropKind | None = None
        # Numerics 900/901 written for this connection (lets SASL avoid saying it twice).
        self.account_numerics_sent = 0
        # Framing and flood control: parsed lines wait their turn in the flood queue.
        self._lines = LineSplitter(self._max_line, report_at_end=True)
        self.flood: FloodQueue[IrcMessage | ParseError] = FloodQueue(
            self.clock, None, self.config.flood_max_queue, self._run_item, _cost
        )
        # True while an item of the flood queue runs (a command done at once lets it go on).
        self._processing = False
        # Output.
        self._output = BoundedOutput(self.config.sendq_bytes)
        self._out: list[bytes] | None = None
        self._label: str | None = None
        # True while this connection's command runs: what it causes goes out with the reply
        # (under its label).  Whether an event is this connection's own doing is its origin.
        self.in_command = False
        self._held: list[bytes] | None = None
        self._batch_ids: Iterator[int] | None = None
        # The draft/multiline batch the client is sending (protocols.irc.handlers.multiline).
        self.multiline: Any = None
        # Timers.
        # A PING went out and nothing has come in since.
        # One timer: the registration deadline, then the pings of an idle connection.
        self._timer = IdleTimer(self.clock, self)
        self._lost = False

    # -- identity ---------------------------------------------------------------------------

    @property
    def user(self) -> UserView | None:
        """The core user (None before registration)."""
        return self.core.user if self.core is not None else None

    @property
    def nick(self) -> str:
        """The client's nick for numerics: ``*`` before registration."""
        user = self.user
        if user is not None and self.registered:
            return user.nick
        return "*"

    @property
    def is_oper(self) -> bool:
        user = self.user
        return user is not None and "oper" in user.modes

    @property
    def secure(self) -> bool:
        """TLS, or loopback (where there is nothing to eavesdrop on); behind a WEBIRC
        gateway, what the gateway said of the user's own connection."""
        if self.gateway_secure is not None:
            return self.gateway_secure
        return peer.is_secure(self.tls, self.address)

    def source_of(self, who: Who) -> str:
        """``nick!ident@host`` of a user snapshot."""
        return who.mask

    @property
    def mask(self) -> str:
        user = self.user
        return user.who().mask if user is not None else f"{self.nick}!*@*"

    def __repr__(self) -> str:
        return f"<IrcConnection {self.nick} {self.address}>"

    # -- connection lifecycle ---------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        peer.set_no_delay(transport)
        self.address = peer.address_of(transport)
        self.tls = peer.is_tls(transport)
        transport.registerProducer(self._output, True)  # type: ignore[attr-defined]
        config = self.config
        if config.flood_burst > 0 and not self.factory.flood_exempt(self.address):
            self.flood.budget = budget_for(
                transport, config.flood_burst, config.flood_rate, self.clock
            )
        self.factory.connection_opened(self)
        try:
            self.core = self.service.connect(self)
        except LimitExceeded as err:
            log.info(
                "irc connection from {address} refused: {reason}",
                address=self.address,
                reason=str(err),
            )
            self.disconnect(str(err))
            return
        connlog.opened("irc", self.core.id, self.address, self.tls)
        self._timer.start(deadline=config.registration_timeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.relay is not None:
            self.relay.client_lost(reason)
            return
        if self._lost:
            return
        self._lost = True
        self.closing = True
        self._timer.stop()
        self.flood.clear()
        self.factory.connection_closed(self)
        if self.sasl is not None:
            self.sasl = None
        if self.core is not None:
            quit_reason = self.quit_reason or "Connection closed"
            nick = self.quit_nick
            if nick is None and self.registered and self.core.user is not None:
                nick = self.core.user.nick
            self.service.quit(self.core, quit_reason, dropped=self.dropped)
            connlog.closed("irc", self.core.id, self.address, nick, quit_reason)
        # Nothing runs for this connection any more: it lets go of what refers back to it
        # (its timer, its queue's handler, the core's connection), so that it is freed as soon
        # as nothing holds it, not by the garbage collector's next full collection, which a
        # burst of short connections made frequent and long.  A Deferred still running for it
        # finds no core connection, as before registration.
        self._timer.forget()
        self.flood.forget()
        self.core = None

    def hold_output(self) -> None:
        self._output.hold()

    def let_output_go(self) -> None:
        self._output.let_go(self.transport)

    def disconnect(self, reason: str) -> None:
        """Tell the client ``ERROR :Closing Link: … (reason)`` and close (IChatClient)."""
        self._close(reason, f"Closing Link: {self._link_name()} ({reason})")

    def quit(self, reason: str) -> None:
        """The client asked to leave (QUIT)."""
        self._close(reason, f"Closing Link: {self._link_name()} ({reason})")

    def _link_name(self) -> str:
        user = self.user
        host = user.host if user is not None else self.address
        return f"{self.nick}[{host}]"

    def _close(self, reason: str, error_text: str, *, abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.quit_reason = reason
        # What the client sent after the command that closes is not run.
        self.flood.clear()
        self._timer.stop()
        # The core forgets the user below; the close line still names it.
        self.quit_nick = self.nick if self.registered else None
        if self._out is not None:
            self._flush_command()
        self._write(serialize(IrcMessage("ERROR", (error_text,)), force_trailing=True))
        # Gone for LUSERS as well, not whenever the peer closes its side.
        self.factory.connection_closed(self)
        if self.core is not None:
            # Others see the reason now, not whenever the socket finishes closing.
            self.service.quit(self.core, reason, dropped=self.dropped)
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abortConnection()  # type: ignore[attr-defined]
            else:
                # What was held for the cluster goes before the close (see hold_output).
                self._output.let_all_go(transport)
                close.close(transport, self.clock)

    def unprocessed_input(self) -> bytes:
        """What the client sent that has not run yet, as lines on the wire again: the lines
        waiting in the flood queue (behind a command still running), then the partial line.
        Lines that could not be parsed are left out (their error replies are lost)."""
        lines = [serialize(item) for item in self.flood.waiting() if isinstance(item, IrcMessage)]
        return b"".join(lines) + self._lines.held()

    def quiesce(self, account: str) -> None:
        """Stop being this client's protocol here (cluster handoff to the node of
        ``account``'s user): no timer, no queued input, no reply of the running command; the
        core forgets the connection without a word to it.  The socket stays open for the
        relay."""
        self.closing = True
        self._timer.stop()
        self._timer.forget()
        self.flood.forget()
        self._out = None
        self._label = None
        self._held = None
        self.sasl = None
        self.factory.connection_closed(self)
        core, self.core = self.core, None
        if core is not None:
            self.service.handed_off(core, account)
            connlog.closed("irc", core.id, self.address, None, "Handed off")

    def relay_farewell(self, reason: str) -> bytes:
        """What the socket is told when the node serving this handed-off client is gone."""
        return serialize(
            IrcMessage("ERROR", (f"Closing Link: {self.address} ({reason})",)),
            force_trailing=True,
        )

    def registration_done(self) -> None:
        """Called once the welcome burst is sent: the registration deadline is met."""
        self._timer.deadline = None

    # -- the idle timer (IdleOwner) ---------------------------------------------------------

    def idle_after(self) -> float:
        return self.config.ping_interval

    def answer_within(self) -> float:
        return self.config.ping_timeout

    def send_probe(self) -> None:
        self._write(f"PING :{self.server_name}\r\n".encode())

    def no_answer(self, silent: float) -> None:
        self.disconnect(f"Ping timeout: {int(silent)} seconds")

    def deadline_passed(self) -> None:
        if not self.registered:
            self.disconnect("Registration timed out")

    # -- input ------------------------------------------------------------------------------

    @property
    def _max_line(self) -> int:
        # The most a line can hold: tags (with '@' and space) and the body (without CRLF).
        return 8191 + self.config.max_line_bytes

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            # Handed off to another node (protocols.transport.handoff): a pipe to it.
            self.relay.from_client(data)
            return
        if self.closing:
            return
        self._timer.touch(self.clock.seconds())
        lines = self._lines.feed(data)
        if not lines:
            return
        max_body = self.config.max_line_bytes - 2
        flood = self.flood
        for raw in lines:
            if raw is TOO_LONG:
                flood.push(ParseError("too_long", "line is too long"))
                continue
            assert not isinstance(raw, TooLong)
            try:
                flood.push(parse(raw, max_body=max_body))
            except ParseError as err:
                if err.code not in ("empty", "no_command"):
                    flood.push(err)
        if not flood:
            return
        with self.service.batch():
            flood.drain()
        # What is still waiting (past the flood budget, or behind a command that waits on
        # the database) is what counts: with flood control off a read of many lines is fine.
        if flood.overflowing:
            self._excess_flood()

    def _excess_flood(self) -> None:
        log.info("irc connection from {address} closed: excess flood", address=self.address)
        self.flood.clear()
        self.dropped = "flood"
        self._close(
            "Excess Flood", "Closing Link: " + self._link_name() + " (Excess Flood)", abort=False
        )

    def _run_item(self, item: IrcMessage | ParseError) -> None:
        self._processing = True
        try:
            if isinstance(item, ParseError):
                self._bad_line(item)
            else:
                self._run(item)
        finally:
            self._processing = False

    def _bad_line(self, err: ParseError) -> None:
        self._begin(None)
        command = err.command or "*"
        if err.code in ("too_long", "tags_too_long"):
            self.reply(n.ERR_INPUTTOOLONG, "Input line was too long")
        elif err.code == "invalid_utf8":
            self.fail(
                command,
                "INVALID_UTF8",
                description="Message rejected, your IRC software MUST use UTF-8 encoding on this network",
            )
        else:
            self.reply(n.ERR_UNKNOWNERROR, command, "Malformed line: " + str(err))
        self._flush_command()

    def _run(self, msg: IrcMessage) -> None:
        self._begin(msg)
        self.in_command = True
        try:
            d = dispatch(self, msg)
        finally:
            self.in_command = False
        self._command_done(d)

    def run_as_command(self, label: str | None, action: Callable[[], Deferred[Any] | None]) -> None:
        """Run ``action`` as one of the client's commands runs: its replies buffered and
        sent under ``label`` (when labeled-response is on), the lines after it waiting until
        it is done.  A command the client sent on another node (cluster handoff) ends here."""
        self._out = []
        self._label = label if label and self.cap_bits & caps.LABELED_RESPONSE else None
        self.in_command = True
        try:
            d = action()
        finally:
            self.in_command = False
        self._command_done(d)

    def _command_done(self, d: Deferred[Any] | None) -> None:
        if d is None:
            self._flush_command()
            return
        # Later lines wait until this command is done, that is until the Deferred's last
        # callback has run: ``d.called`` is already true while a callback's own Deferred (a
        # thread, the database) still waits, and the next command must not be answered
        # before this one.
        self.flood.hold()
        d.addBoth(self._deferred_done)

    def _deferred_done(self, result: Any) -> None:
        self.flood.release()
        self._flush_command()
        if not self.closing and not self._processing:
            # Done later, on its own: carry on with the lines that waited behind it.
            self.flood.drain()
        return None

    # -- output -----------------------------------------------------------------------------

    def _begin(self, msg: IrcMessage | None) -> None:
        self._out = []
        label = msg.tags.get("label") if msg is not None else None
        self._label = label if label and self.cap_bits & caps.LABELED_RESPONSE else None

    def running_label(self) -> str | None:
        """The label the running command's replies go out under (None if none)."""
        return self._label

    def take_label(self) -> str | None:
        """The running command's label, taken off it: the command answers later, under a
        command of its own (a draft/multiline batch is answered when it ends)."""
        label, self._label = self._label, None
        return label

    def put_label(self, label: str | None) -> None:
        """Answer the running command under ``label`` (one taken by :meth:`take_label`)."""
        if label is not None and self.cap_bits & caps.LABELED_RESPONSE:
            self._label = label

    def _flush_command(self) -> None:
        out, self._out = self._out, None
        label, self._label = self._label, None
        if out is None:
            return
        if label is None:
            if out:
                self._write(b"".join(out))
            return
        self._write(self._labeled(out, label))

    def _labeled(self, out: list[bytes], label: str) -> bytes:
        """Wrap a command's reply for labeled-response: ACK, one labeled line, or a batch."""
        lines = [ln for ln in b"".join(out).split(b"\r\n") if ln]
        tag = ("label=" + escape_tag_value(label)).encode()
        me = self.server_name.encode()
        if not lines:
            return b"@" + tag + b" :" + me + b" ACK\r\n"
        if len(lines) == 1:
            return add_tag(lines[0], tag) + b"\r\n"
        if _one_batch(lines):
            # The reply is one batch already (a draft/multiline echo): its start takes the label.
            return add_tag(lines[0], tag) + b"\r\n" + b"".join(ln + b"\r\n" for ln in lines[1:])
        if not self.cap_bits & caps.BATCH:
            return add_tag(lines[0], tag) + b"\r\n" + b"".join(ln + b"\r\n" for ln in lines[1:])
        batch_id = self.new_batch_id()
        ref = ("batch=" + batch_id).encode()
        parts = [
            b"@" + tag + b" :" + me + b" BATCH +" + batch_id.encode() + b" labeled-response\r\n"
        ]
        for ln in lines:
            parts.append((ln if has_batch_tag(ln) else add_tag(ln, ref)) + b"\r\n")
        parts.append(b":" + me + b" BATCH -" + batch_id.encode() + b"\r\n")
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self._lost or not data:
            return
        if not self._output.write(transport, data):
            # A reader this slow would make the server hold its output without bound.
            log.info("irc connection from {address} closed: SendQ exceeded", address=self.address)
            self.closing = True
            self.quit_reason = "SendQ exceeded"
            self.factory.connection_closed(self)
            self.flood.clear()
            self.dropped = "slow_reader"
            if self.core is not None:
                self.service.quit(self.core, "SendQ exceeded", dropped="slow_reader")
            transport.abortConnection()  # type: ignore[attr-defined]

    def queue_line(self, line: bytes) -> None:
        """Queue one reply line that is ready to send (CRLF included), as :meth:`reply` does."""
        self._queue(line)

    def _queue(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        else:
            self._write(data)

    def emit(self, data: bytes) -> None:
        """Send rendered event bytes: into the reply when this connection's own command
        caused the event (so a label covers it), else straight out."""
        if self._held is not None:
            self._held.append(data)
        elif self.in_command and self._out is not None:
            self._out.append(data)
        else:
            self._write(data)

    def emit_delivery(self, data: bytes) -> None:
        """Send rendered event bytes that this connection's command caused but that do not
        answer it: under a label they go out on their own, else with the reply."""
        if self._held is None and self.in_command and self._label is not None:
            self._write(data)
        else:
            self.emit(data)

    def hold_events(self) -> None:
        """Keep delivered events back until :meth:`release_events` (used around registration,
        so that notices the core sends on claiming a nick follow the welcome burst)."""
        if self._held is None:
            self._held = []

    def release_events(self) -> None:
        held, self._held = self._held, None
        for data in held or ():
            self.emit(data)

    def send_message(self, msg: IrcMessage) -> None:
        """Queue ``msg`` in the current reply (or send it now when no command is running)."""
        self._queue(serialize(msg))

    def send(
        self,
        command: str,
        *params: str,
        source: str | None = None,
        tags: dict[str, str] | None = None,
        force_trailing: bool = False,
    ) -> None:
        """Queue a line; ``source`` None means the server."""
        msg = IrcMessage(command, params, source or self.server_name, tags or {})
        # Fitted: what handlers send may echo the client (CAP NAK repeats the request).
        self._queue(serialize_fitted(msg, force_trailing=force_trailing))

    def reply(self, numeric: str, *params: str) -> None:
        """Queue ``:server NUMERIC <nick> params…``."""
        # COMPAT: naive bot parsers take a numeric's last parameter after " :" (e.g. the names
        # of 353), so it is always written as a trailing one.
        msg = IrcMessage(numeric, (self.nick, *params), self.server_name)
        # Fitted: parameters echoed from the client could make the reply pass 512 bytes.
        self._queue(serialize_fitted(msg, force_trailing=bool(params)))

    def _standard_reply(
        self, kind: str, command: str, code: str, context: Sequence[str], description: str
    ) -> None:
        if kind != "FAIL" and "standard-replies" not in self.caps:
            # Without the capability WARN and NOTE would be unknown lines: say it as a notice.
            self.send("NOTICE", self.nick, f"{command} {code}: {description}")
            return
        self._queue(
            serialize_fitted(
                IrcMessage(kind, (command, code, *context, description), self.server_name),
                force_trailing=True,
            )
        )

    def fail(self, command: str, code: str, *context: str, description: str) -> None:
        """IRCv3 standard reply ``FAIL <command> <code> [context…] :<description>``."""
        self._standard_reply("FAIL", command, code, context, description)

    def warn(self, command: str, code: str, *context: str, description: str) -> None:
        """``WARN …`` (a NOTICE for clients without standard-replies)."""
        self._standard_reply("WARN", command, code, context, description)

    def note(self, command: str, code: str, *context: str, description: str) -> None:
        """``NOTE …`` (a NOTICE for clients without standard-replies)."""
        self._standard_reply("NOTE", command, code, context, description)

    def new_batch_id(self) -> str:
        """A batch reference unique on this connection."""
        if self._batch_ids is None:
            self._batch_ids = itertools.count(1)
        return f"{self.core.id if self.core else 0:x}b{next(self._batch_ids):x}"

    def start_batch(self, kind: str, *params: str) -> str | None:
        """Queue ``BATCH +id kind params``; None (and nothing sent) without the batch cap."""
        if not self.cap_bits & caps.BATCH:
            return None
        batch_id = self.new_batch_id()
        self.send("BATCH", "+" + batch_id, kind, *params)
        return batch_id

    def end_batch(self, batch_id: str | None) -> None:
        if batch_id is not None:
            self.send("BATCH", "-" + batch_id)

    def queue_history(
        self, messages: Sequence[Message | RoomEventRecord], batch_id: str | None
    ) -> None:
        """Queue stored messages (and room events) as this client would have received them
        live."""
        for msg in messages:
            self._queue(history_lines(self, msg, batch_id))

    def set_caps(self, enabled: AbstractSet[str]) -> None:
        """Replace the enabled capabilities (and the rendering bits derived from them)."""
        self.caps = enabled
        self.cap_bits = caps.bits_of(enabled)

    # -- errors -----------------------------------------------------------------------------

    def reply_error(self, err: ChatError, command: str, target: str = "") -> None:
        """Answer a core refusal with the numeric IRC gives it (see protocols.irc.errors)."""
        errors.reply_error(self, err, command, target)

    # -- IChatClient ------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Render ``event`` for this client and send it (never raises)."""
        if self.closing:
            return
        if (
            type(event) is Message
            and event.origin is self
            and event.room is not None
            and not self.cap_bits & caps.ECHO_MESSAGE
        ):
            # Its own room message without echo-message, which the core hands every sender:
            # nothing to send (what render_message comes to), known without rendering.
            return
        try:
            data = render(self, event)
        except Exception:
            log.failure("rendering {event} for IRC", event=type(event).__name__)
            return
        if data:
            self.emit(data)

    @property
    def echoes_own_messages(self) -> bool:
        """Whether this client is sent its own messages (echo-message)."""
        return bool(self.cap_bits & caps.ECHO_MESSAGE)

    def deliver_batch(self, batch: MessageBatch) -> None:
        """Room messages other connections said in this turn: one write for all of them.

        Written at once even while a command of this client runs: they are not its reply, so
        a label must not cover them, and they were said before whatever the command causes.
        """
        if self.closing:
            return
        if self._held is not None:
            for msg in batch.messages:
                self.deliver(msg)
            return
        try:
            data = render_batch(self, batch)
        except Exception:
            log.failure("rendering a batch of {n} messages for IRC", n=len(batch.messages))
            # One by one: a message that cannot be rendered costs only itself.
            for msg in batch.messages:
                self.deliver(msg)
            return
        if data:
            self._write(data)


def _cost(item: IrcMessage | ParseError) -> float:
    """Flood tokens a queued line takes when it runs: its command's cost in the command
    table (a malformed line costs 1)."""
    return 1.0 if isinstance(item, ParseError) else cost_of(item.command)


def add_tag(line: bytes, tag: bytes) -> bytes:
    """``line`` (without CRLF) with one more tag in front."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def _one_batch(lines: list[bytes]) -> bool:
    """Whether ``lines`` are one draft/multiline batch, ``BATCH +ref`` to ``BATCH -ref``, and
    nothing else (the echo of a multiline message, which clients expect the label on)."""
    first, last = lines[0].split(b" "), lines[-1].split(b" ")
    if first[0].startswith(b"@"):
        first = first[1:]
    if last[0].startswith(b"@"):
        last = last[1:]
    if len(first) < 4 or len(last) < 3 or first[1] != b"BATCH" or last[1] != b"BATCH":
        return False
    if first[3] != b"draft/multiline":
        return False
    ref = first[2][1:]
    if not first[2].startswith(b"+") or last[2] != b"-" + ref:
        return False
    tag = b"batch=" + ref
    return all(
        ln.startswith(b"@") and tag in ln.split(b" ", 1)[0][1:].split(b";") for ln in lines[1:-1]
    )


def has_batch_tag(line: bytes) -> bool:
    if not line.startswith(b"@"):
        return False
    tags = line[1 : line.find(b" ")]
    return any(t.startswith(b"batch=") for t in tags.split(b";"))
