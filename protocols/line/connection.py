"""One line-chat connection: framing, limits, the nick prompt, and delivery of core events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserver.core.errors import LimitExceeded
from chatserver.core.events import (
    DropKind,
    Event,
    Join,
    Kick,
    Message,
    MessageBatch,
    MessageRun,
    NickChange,
    Part,
    RoomRenamed,
)
from chatserver.core.interfaces import IChatClient
from chatserver.core.names import casefold
from protocols import connlog
from protocols.line import commands
from protocols.line.framing import (
    DO,
    DONT,
    IAC,
    TOO_LONG,
    WILL,
    WONT,
    LineFramer,
    Negotiations,
    as_input,
)
from protocols.line.render import (
    ERROR,
    EVENT,
    INFO,
    JSON_KEY,
    TEXT_KEY,
    dump,
    history_text,
    members_text,
    message_json,
    render_json,
    render_text,
    room_json,
    text_is_personal,
    topic_text,
)
from protocols.transport import close, peer
from protocols.transport.flood import FloodBudget, budget_for
from protocols.transport.idle import IdleTimer
from protocols.transport.output import BoundedOutput

if TYPE_CHECKING:
    from chatserver.core.views import RoomView, Session, UserView
    from protocols.line.factory import LineFactory, LineSettings
    from protocols.transport.handoff import ClientRelay

# Unsent output allowed to pile up while the peer does not read (after the transport has
# asked us to pause); past it the connection is dropped rather than grow memory.
MAX_BACKLOG = 1 << 20

# Members named when joining a room (text mode): a room of thousands would send each joiner
# a line of tens of kilobytes, thousands of times over; /who lists them all.
JOIN_MEMBERS_SHOWN = 100

PROMPT = f"{INFO}Choose a nick:"
PROBE = f"{EVENT}ping: are you there? (any line answers)"


@implementer(IChatClient)
class LineConnection(Protocol):
    """A telnet, netcat or script client: text lines, or JSON Lines after ``/format json``.

    ``flood`` is its flood budget: each line takes a token, and ``flood.charge(cost)`` takes
    more for a command that costs the server more.
    """

    log = Logger()
    protocol = "line"
    # While a batch is rendered: its pieces, written as one.
    _cork: list[bytes] | None = None
    # A user's own room messages are not shown back to the connection that sent them.
    echoes_own_messages = False
    echo_at_turn_end = False
    # Set once the client is handed off to another node (protocols.transport.handoff).
    relay: ClientRelay | None = None
    # Slots: an idle connection is mostly this object, and ten thousand of them add up.
    __slots__ = (
        "_by_server",
        "_closing",
        "_current",
        "_dropped",
        "_flooding",
        "_framer",
        "_key",
        "_negotiated",
        "_output",
        "_quit_reason",
        "_timer",
        "_waiting",
        "_warnings",
        "address",
        "clock",
        "conn",
        "echo",
        "factory",
        "flood",
        "mode",
        "nick",
        "secure",
        "service",
        "tls",
    )

    def __init__(self, factory: LineFactory) -> None:
        self.factory = factory
        self.service = factory.service
        self.clock = factory.clock
        self.address = ""
        # Encrypted, or from this machine: what the core calls secure.
        self.secure = False
        self.tls = False
        self.conn: Session | None = None
        # This connection's nick, kept here because the core may show us a nick change while
        # we are between users (when a login moves us to the account's user).
        self.nick: str | None = None
        # The nick casefolded: what events about this user are recognised by.
        self._key: str | None = None
        self.mode = "text"
        # /echo on: the user's own messages come back, as the others see them.
        self.echo = False
        self._current: str | None = None
        self._framer = LineFramer(self.config.max_line_bytes)
        self.flood: FloodBudget | None = None
        self._warnings = 0
        self._flooding = False
        # Idle probes: only a whole line is activity (bytes trickled in without an end of
        # line, slowloris, must not keep a connection open past the idle timeout).
        self._timer = IdleTimer(self.clock, self)
        self._closing = False
        self._quit_reason: str | None = None
        # Set when the server closes the connection for flooding or a full output backlog.
        self._dropped: DropKind | None = None
        self._by_server = False
        # Telnet options already refused (made when a client first asks for one).
        self._negotiated: set[tuple[int, int]] | None = None
        self._output = BoundedOutput(MAX_BACKLOG)
        # While a command is answered later (a login's password check): the lines read
        # after it, which wait until it is done (see hold_input).
        self._waiting: list[bytes | object] | None = None

    @property
    def config(self) -> LineSettings:
        # Read through the factory each time: a configuration reload replaces it there.
        return self.factory.config

    # -- the transport ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        # Any: twisted types ITransport's methods in a way mypy cannot call.
        transport: Any = self.transport
        assert transport is not None
        self.address = peer.address_of(transport)
        self.tls = peer.is_tls(transport)
        self.secure = peer.is_secure(self.tls, self.address)
        peer.set_no_delay(transport)
        if self.open_session():
            self._greet()

    def open_session(self) -> bool:
        """Attach to the core, with this connection's limits and timer: whether it was let
        in (else it was told why, and closed)."""
        transport: Any = self.transport
        transport.registerProducer(self._output, True)
        self.flood = budget_for(
            transport, self.config.flood_burst, self.config.flood_rate, self.clock
        )
        if self.config.require_tls and not self.secure:
            reason = self.tls_advice("plaintext connections from other machines are not accepted")
            self.log.info("line connection from {address} refused: plaintext", address=self.address)
            self.send_error("tls_required", reason)
            self._close("TLS required")
            return False
        try:
            self.conn = self.service.connect(self)
        except LimitExceeded as err:
            self.log.info(
                "line connection from {address} refused: {reason}",
                address=self.address,
                reason=err.reason,
            )
            code, message, _extra = commands.describe(err)
            self.send_error(code, message)
            self._close(err.reason)
            return False
        connlog.opened("line", self.conn.id, self.address, self.tls)
        self._timer.start()
        return True

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            # Handed off to another node (protocols.transport.handoff): a pipe to it.
            self.relay.from_client(data)
            return
        # Room messages of a reactor turn reach the other members together (one write each).
        with self.service.batch():
            self._data_received(data)

    def _data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.clock.seconds()
        framer = self._framer
        items = framer.feed(data)
        answer = not framer.commands or self._charge_commands(framer.commands)
        for item in items:
            if self._closing:
                return
            if isinstance(item, bytes) or item is TOO_LONG:
                self._timer.touch(now)
                # Charged as it is read: the budget is also what bounds the lines waiting.
                if not self._admit():
                    continue
                if self._waiting is not None:
                    self._waiting.append(item)
                else:
                    self._take(item)
            elif answer and isinstance(item, Negotiations):
                for request in item.requests():
                    self._refuse_option(request.command, request.option)

    def _take(self, item: bytes | object) -> None:
        """Handle a line (or the mark of one too long) that the flood budget let in."""
        if isinstance(item, bytes):
            self._handle(item)
        else:
            self.send_error(
                "too_long",
                f"line too long (the limit is {self.config.max_line_bytes} bytes); it was dropped",
            )

    def hold_input(self) -> None:
        """A command is answered later (its handler returned a Deferred): the lines after
        it wait until :meth:`release_input`, for a client that sends lines in a row expects
        them run in order (a login, then what the logged-in user says)."""
        if self._waiting is None:
            self._waiting = []

    def release_input(self) -> None:
        """The command that held input is done: run the lines that waited, in order (until
        one of them holds input again)."""
        waiting, self._waiting = self._waiting, None
        if not waiting or self._closing or self.relay is not None:
            # Closed, or handed to another node, which got them (held_input).
            return
        with self.service.batch():
            for index, item in enumerate(waiting):
                if self._closing:
                    return
                if self._waiting is not None:
                    self._waiting.extend(waiting[index:])
                    return
                self._take(item)

    def _handle(self, line: bytes) -> None:
        # Decoding with replacement and the framer dropping NUL make every line text by the
        # core's rule (names.text_problem); JSON commands are checked as they are decoded.
        try:
            commands.handle_line(self, line.decode("utf-8", "replace"))
        except Exception:
            # A bug in one command costs that command, never the connection.
            self.log.failure("line: handling a line from {address}", address=self.address)
            if not self._closing:
                self.send_error("internal", "internal error; the server log has the details")

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.relay is not None:
            self.relay.client_lost(reason)
            return
        self._closing = True
        conn, self.conn = self.conn, None
        if conn is not None:
            self.service.quit(conn, self._quit_reason or "Connection closed", dropped=self._dropped)
            self._log_closed(conn.id)
        # Nothing runs for this connection any more: its timer lets go of it, the last thing
        # that referred back to it, so that it is freed as soon as nothing holds it instead of
        # by the garbage collector's next full collection.
        self._timer.forget()

    def held_input(self) -> bytes:
        """What was received and not handled yet: the lines waiting for a command to be
        done (as they came: a byte 0xFF doubled, as telnet has it), then a partial line."""
        lines = [item for item in self._waiting or () if isinstance(item, bytes)]
        return as_input(lines) + self._framer.held()

    def quiesce(self, account: str) -> None:
        """The client is handed off to the node of ``account``'s user
        (protocols.transport.handoff): this object is only its socket's pipe from now on."""
        self._closing = True
        self._timer.forget()
        conn, self.conn = self.conn, None
        if conn is not None:
            self.service.handed_off(conn, account)
            connlog.closed("line", conn.id, self.address, None, "handed off to another server")

    def arrived(self, nick: str, current: str | None) -> None:
        """Handed to this node by one where the client was ``nick``, talking in the room
        ``current``: events about that user are about this connection until it logs in."""
        self.nick = nick or None
        self._key = casefold(nick) if nick else None
        self._current = current

    def relay_farewell(self, reason: str) -> bytes:
        """What the socket is told when the node serving this handed-off client is gone: as
        a server's close, in the mode the client was in when it was handed off."""
        if self.mode == "json":
            return dump({"type": "disconnect", "reason": reason})
        return f"{EVENT}Server closing connection: {reason}\r\n".encode()

    def _log_closed(self, id: int) -> None:
        # A user's quit message is theirs, not the log's.
        why = (
            f"server: {self._quit_reason}"
            if self._by_server
            else "quit"
            if self._quit_reason
            else "by the client"
        )
        connlog.closed("line", id, self.address, self.nick, why)

    def _write(self, data: bytes) -> None:
        transport: Any = self.transport
        if self._closing or transport is None:
            return
        if self._cork is not None:
            self._cork.append(data)
            return
        if not self._output.write(transport, data):
            self.log.info(
                "line connection from {address}: output backlog full", address=self.address
            )
            self._closing = True
            self._quit_reason = "Output backlog full"
            self._dropped = "slow_reader"
            self._by_server = True
            self._timer.stop()
            transport.abortConnection()

    def _refuse_option(self, command: int, option: int) -> None:
        # We support no telnet option: refuse each one asked for, once (RFC 854 forbids
        # answering a refusal, so this cannot loop).
        key = (command, option)
        if command not in (DO, WILL):
            return
        if self._negotiated is None:
            self._negotiated = set()
        elif key in self._negotiated:
            return
        self._negotiated.add(key)
        answer = WONT if command == DO else DONT
        self._write(bytes((IAC, answer, option)))

    # -- limits ----------------------------------------------------------------------------

    def _admit(self, cost: float = 1.0) -> bool:
        """Take a token for one line (``cost`` for that many telnet commands); past an empty
        bucket warn, and in the end disconnect."""
        flood = self.flood
        assert flood is not None
        config = self.config
        # After a reload this connection's budget follows the new limits from now on.
        flood.configure(config.flood_burst, config.flood_rate)
        if self._warnings and flood.full():
            self._warnings = 0
        if flood.take(cost):
            self._flooding = False
            return True
        if self._flooding:
            # Already warned for this burst: drop quietly.
            return False
        self._flooding = True
        limit = self.config.flood_max_warnings
        if self._warnings >= limit:
            self._dropped = "flood"
            self.disconnect("Excess flood")
            return False
        self._warnings += 1
        self.send_error(
            "flood",
            f"you are sending too fast: lines are dropped until you slow down"
            f" (warning {self._warnings} of {limit}; the next one closes the connection)",
        )
        return False

    def _charge_commands(self, count: int) -> bool:
        """Telnet commands cost like lines, into debt: a client a whole burst in debt is
        flooding and is disconnected.  Whether there was budget for them (their option
        requests are answered only then)."""
        flood = self.flood
        assert flood is not None
        flood.charge(count)
        level = flood.level()
        if level < -self.config.flood_burst:
            self._dropped = "flood"
            self.disconnect("Excess flood")
            return False
        return level >= 0

    # The idle timer (IdleOwner).

    def idle_after(self) -> float:
        return self.config.idle_timeout

    def answer_within(self) -> float:
        return self.config.ping_timeout

    def send_probe(self) -> None:
        if self.mode == "json":
            self._write(dump({"type": "ping"}))
        else:
            self._write(f"{PROBE}\r\n".encode())

    def no_answer(self, silent: float) -> None:
        self.disconnect(f"Ping timeout: no answer in {self.config.ping_timeout:g} seconds")

    def deadline_passed(self) -> None:
        """Line chat sets no deadline (the idle probe covers a silent client)."""

    # -- IChatClient -----------------------------------------------------------------------

    def deliver_batch(self, batch: MessageBatch) -> None:
        """A room's events of one reactor turn, written at once: the same bytes for every
        member in this mode (a batch holds neither this user's own messages nor events
        about it), joined once."""
        if self._closing:
            return
        key = JSON_KEY if self.mode == "json" else TEXT_KEY
        base = batch.base
        if base is not None:
            # A sender's rest of the turn (see MessageBatch.spans): runs of the bytes each
            # message of the whole batch has in this mode, made once per mode.
            parts_key = ("parts", key)
            parts = base.rendered.get(parts_key)
            if parts is None:
                parts = base.rendered[parts_key] = [
                    self._render_shared(event) or b"" for event in base.messages
                ]
            data: bytes | None = batch.join_spans(parts)
        else:
            data = batch.rendered.get(key)
            if data is None:
                data = batch.rendered[key] = b"".join(
                    self._render_shared(event) or b"" for event in batch.messages
                )
        if data:
            self._write(data)

    def deliver(self, event: Event) -> None:
        if self._closing:
            return
        kind = type(event)
        try:
            if kind is Message:
                assert isinstance(event, Message)
                # What this connection sent itself is not echoed (its user typed it), unless
                # the user asked for it with /echo on.
                if (
                    event.origin is self
                    and not self.echo
                    and (event.room is not None or not self._is_me(event.target or ""))
                ):
                    return
            elif kind is NickChange:
                assert isinstance(event, NickChange)
                if event.who.key == self._key:
                    self.nick = event.new_nick
                    self._key = casefold(event.new_nick)
            data = self._render(event)
            if data:
                self._write(data)
            if kind is Join:
                assert isinstance(event, Join)
                if event.origin is not self and event.who.key == self._key:
                    # Joined from another connection of this user (its own join's handler
                    # shows the room): the room appears here too.
                    room = self.service.get_room(event.room)
                    if room is not None:
                        self.joined(room)
            elif kind is Part:
                assert isinstance(event, Part)
                if event.who.key == self._key:
                    self._left(event.room)
            elif kind is Kick:
                assert isinstance(event, Kick)
                if event.target.key == self._key:
                    self._left(event.room)
            elif kind is RoomRenamed:
                assert isinstance(event, RoomRenamed)
                if self._current == event.old:
                    # Still talking in the same room, under its new name.
                    self._current = event.new
        except Exception:
            self.log.failure("line: delivering {event}", event=kind.__name__)

    def hold_output(self) -> None:
        self._output.hold()

    def let_output_go(self) -> None:
        self._output.let_go(self.transport)

    def disconnect(self, reason: str) -> None:
        if self._closing:
            return
        if self.mode == "json":
            self._write(dump({"type": "disconnect", "reason": reason}))
        else:
            self._write(f"{EVENT}Server closing connection: {reason}\r\n".encode())
        self._close(reason)

    def _close(self, reason: str, *, by_server: bool = True) -> None:
        self._closing = True
        self._quit_reason = reason
        self._by_server = by_server
        self._timer.stop()
        transport: Any = self.transport
        conn, self.conn = self.conn, None
        if conn is not None:
            # Others see the user leave now, not when the client gets round to closing.
            self.service.quit(conn, reason, dropped=self._dropped)
            self._log_closed(conn.id)
        if transport is not None:
            # What was held for the cluster goes before the close (see hold_output).
            self._output.let_all_go(transport)
            close.close(transport, self.clock)

    def quit(self, reason: str) -> None:
        """The user asked to leave."""
        if not self._closing:
            self._close(reason, by_server=False)

    def _render(self, event: Event) -> bytes | None:
        if self.mode == "text" and text_is_personal(event, self._key):
            text = render_text(event, self.nick)
            return f"{text}\r\n".encode() if text else None
        return self._render_shared(event)

    def _render_shared(self, event: Event) -> bytes | None:
        """``event`` as every member in this mode it is not about sees it (cached on it)."""
        if type(event) is MessageRun:
            # Another node's run: its messages, made here.
            return b"".join(self._render_shared(msg) or b"" for msg in event.messages())
        if self.mode == "json":
            data = event.rendered.get(JSON_KEY)
            if data is None:
                obj = render_json(event)
                if obj is None:
                    return None
                data = event.rendered[JSON_KEY] = dump(obj)
            return data
        data = event.rendered.get(TEXT_KEY)
        if data is None:
            text = render_text(event, None)
            data = event.rendered[TEXT_KEY] = f"{text}\r\n".encode() if text else b""
        return data

    def _is_me(self, nick: str) -> bool:
        return self._key is not None and casefold(nick) == self._key

    # -- rooms this user enters and leaves ----------------------------------------------------

    def joined(self, room: RoomView) -> None:
        """This user is now in ``room``: what a member sees on joining."""
        self.show_room(room)
        if self.current_room is None:
            self._current = room.name

    def _left(self, room: str) -> None:
        # The core tells the room before it removes us: the room is still in user.rooms.
        if self._current != room:
            return
        user = self.user
        others = [name for name in user.rooms if name != room] if user is not None else []
        self._current = others[-1] if others else None
        if self._current is not None and self.mode == "text":
            self.write_line(f"{INFO}now talking in #{self._current}")

    # -- state for commands ----------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The core's record of this connection (commands run only while it is open)."""
        if self.conn is None:
            raise commands.CommandError("closed", "the connection is closed")
        return self.conn

    @property
    def user(self) -> UserView | None:
        return self.conn.user if self.conn is not None else None

    @property
    def current_room(self) -> str | None:
        """The room plain lines go to: the last joined, or a remaining one after a part."""
        user = self.user
        if user is None:
            return None
        if self._current is not None and self._current in user.rooms:
            return self._current
        # The room joined last (rooms keep their order of joining).
        self._current = next(reversed(tuple(user.rooms)), None)
        return self._current

    @current_room.setter
    def current_room(self, room: str | None) -> None:
        self._current = room

    # -- output ----------------------------------------------------------------------------

    def write_line(self, line: str) -> None:
        self._write(f"{line}\r\n".encode())

    def write_obj(self, obj: dict[str, Any]) -> None:
        self._write(dump(obj))

    def send_reply(
        self, cmd: str, lines: list[str], fields: dict[str, Any], tag: Any = None
    ) -> None:
        if self.mode == "json":
            obj: dict[str, Any] = {"type": "ok", "cmd": cmd, **fields}
            if tag is not None:
                obj["tag"] = tag
            self.write_obj(obj)
        elif lines:
            self._write("".join(f"{line}\r\n" for line in lines).encode())

    def send_error(
        self,
        code: str,
        message: str,
        *,
        cmd: str | None = None,
        usage: str | None = None,
        tag: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self.mode == "json":
            obj: dict[str, Any] = {"type": "error"}
            if cmd is not None:
                obj["cmd"] = cmd
            obj.update(error=code, message=message)
            if usage is not None:
                obj["usage"] = usage
            if extra:
                obj.update(extra)
            if tag is not None:
                obj["tag"] = tag
            self.write_obj(obj)
        else:
            text = f"{ERROR}error: {message}\r\n"
            if usage is not None:
                text += f"{ERROR}usage: {usage}\r\n"
            self._write(text.encode())
        if self.user is None and not self._closing and self.conn is not None:
            self.prompt()

    # -- the session -----------------------------------------------------------------------

    def _greet(self) -> None:
        name = self.service.settings.server_name
        if self.mode == "json":
            # A client that starts in JSON mode (over WebSocket) is a program: no banner text.
            self.write_obj({"type": "welcome", "server": name, "motd": self.config.motd})
            self.prompt()
            return
        lines = [f"{INFO}Welcome to {name} (line chat)."]
        lines.extend(f"{INFO}{line}" for line in self.config.motd.splitlines())
        lines.append(
            f"{INFO}Commands start with /: /help lists them; /format json switches to JSON Lines."
        )
        self._write("".join(f"{line}\r\n" for line in lines).encode())
        self.prompt()

    def may_send_passwords(self) -> bool:
        """Whether a password may be sent here: over TLS, from loopback, or when allowed."""
        return self.secure or self.config.plaintext_passwords

    def tls_advice(self, refusal: str) -> str:
        """``refusal``, and where to connect instead."""
        port = getattr(self.config, "tls_port", 0)
        if port:
            return f"{refusal}: connect with TLS to port {port}"
        return f"{refusal}, and this server has no TLS port"

    def prompt(self) -> None:
        if self.mode == "json":
            self.write_obj({"type": "prompt", "prompt": "nick"})
        else:
            self.write_line(PROMPT)

    def welcome(self, user: UserView) -> None:
        """A nick was claimed: greet, and show the rooms of a user we joined (multiclient)."""
        self.nick = user.nick
        self._key = casefold(user.nick)
        if self.conn is not None:
            connlog.registered("line", self.conn.id, self.address, user.nick)
        if self.mode == "text":
            self.write_line(
                f"{INFO}You are {user.nick}. /join <room> to talk, /rooms lists the rooms,"
                " /help the commands."
            )
            if user.account is not None:
                self.write_line(f"{INFO}you are logged in as {user.account}")
        until = self.service.missed_since(self.conn) if self.conn is not None else None
        for room in list(user.rooms.values()):
            self.show_room(room, joined=False, until=until)
        if user.rooms:
            self._current = tuple(user.rooms)[-1]
            if self.mode == "text":
                self.write_line(f"{INFO}now talking in #{self._current}")

    def show_room(self, room: RoomView, *, joined: bool = True, until: float | None = None) -> None:
        """What a member sees on joining: topic, members, and the latest messages (those
        said by ``until``, when the rest comes as missed messages)."""
        count = min(10, self.service.settings.join_history_lines)
        recent = self.service.recent(room.name, count)
        if until is not None:
            recent = [msg for msg in recent if msg.ts <= until]
        if self.mode == "json":
            self.write_obj({"type": "room", **room_json(room, show_key=True)})
            for msg in recent:
                self.write_obj({**message_json(msg), "history": True})
            return
        lines = [] if joined else [f"{INFO}you are in #{room.name}"]
        lines.append(topic_text(room))
        lines.append(members_text(room, JOIN_MEMBERS_SHOWN))
        now = self.clock.seconds()
        lines.extend(history_text(msg, now) for msg in recent)
        self._write("".join(f"{line}\r\n" for line in lines).encode())

    def __repr__(self) -> str:
        return f"<LineConnection {self.address} {self.nick}>"
