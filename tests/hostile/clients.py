"""Blocking socket clients for the hostile battery: raw connections and logged-in users of
line chat, IRC and XMPP.

Every connection is made from a chosen loopback source address (127.0.0.0/8 is all
loopback on Linux), so that attackers, their victims and the well-behaved bystanders are
different addresses to the server's per-address limits, as they would be on a network.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from typing import Any

from lxml import etree

HOST = "127.0.0.1"
# Generated input and most attacks come from here.
ATTACKER = "127.0.0.1"
# The well-behaved pair (exempt from per-address limits in the test config, like a gateway).
BYSTANDER = "127.0.0.2"
# Users the attacks aim at, and observers of what attackers say.
VICTIM = "127.0.0.3"
# Registration and password-guessing attacks, each from an address of its own so that the
# throttles they trip do not leak into other tests.
REGISTRAR = "127.0.0.4"
GUESSER = "127.0.0.5"
GUESSER2 = "127.0.0.6"
GUESSER3 = "127.0.0.7"
# Generated input: it tries passwords too, and must not get the other attackers throttled.
FUZZ = "127.0.0.8"

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"
NS_MUC = "http://jabber.org/protocol/muc"
XMPP_DOMAIN = "localhost"
MUC_DOMAIN = "conference.localhost"
XMPP_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)


def connect(
    port: int,
    *,
    source: str = ATTACKER,
    timeout: float = 5.0,
    rcvbuf: int | None = None,
) -> socket.socket:
    """A TCP connection to the server from ``source`` (``rcvbuf`` set before connecting, so
    that the advertised window is small from the first packet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect((HOST, port))
    return sock


# Every client a test opens, so that the test's teardown closes what an assertion left
# open (a leftover connection would count against the next test's per-address limit).
OPEN: list[Any] = []


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()


def keep(client: Any) -> Any:
    """Take ``client`` out of the per-test cleanup (it lives longer than one test)."""
    if client in OPEN:
        OPEN.remove(client)
    return client


class Closed(ConnectionError):
    """The server closed the connection (``seen``: the lines it sent before)."""


class RawClient:
    """A socket with a line reader; ``seen`` keeps every line received."""

    def __init__(
        self,
        port: int,
        *,
        source: str = ATTACKER,
        timeout: float = 5.0,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = connect(port, source=source, timeout=timeout, rcvbuf=rcvbuf)
        OPEN.append(self)
        self.timeout = timeout
        self.buffer = b""
        self.seen: list[str] = []
        # Lines that were not UTF-8 (the server must never send one).
        self.not_utf8: list[bytes] = []
        self.closed = False

    def send(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.sock.sendall(raw)

    def send_line(self, line: str) -> None:
        self.send(line.encode() + b"\r\n")

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing in time; last lines: {self.seen[-10:]}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise Closed(f"closed; last lines: {self.seen[-10:]}")
        self.buffer += chunk

    def read_line(self, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        raw = line.rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.not_utf8.append(raw)
            text = raw.decode("utf-8", "replace")
        self.seen.append(text)
        self.on_line(text)
        return text

    def on_line(self, line: str) -> None:
        """A hook for protocol chores (answering pings)."""

    def expect(self, wanted: str | Callable[[str], bool], timeout: float | None = None) -> str:
        """Read lines until one contains ``wanted`` (or satisfies it)."""
        test = wanted if callable(wanted) else (lambda line: wanted in line)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.read_line(max(deadline - time.monotonic(), 0.001))
            if test(line):
                return line

    def read_until_closed(self, timeout: float | None = None) -> list[str]:
        """Every line until the server closes (TimeoutError if it does not in time)."""
        start = len(self.seen)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                self.read_line(max(deadline - time.monotonic(), 0.001))
        except Closed:
            if self.buffer:
                self.seen.append(self.buffer.decode("utf-8", "replace"))
                self.buffer = b""
            return self.seen[start:]

    def read_bytes_until_closed(self, timeout: float) -> bytes:
        """Raw bytes until the server closes (TimeoutError if it does not in time)."""
        deadline = time.monotonic() + timeout
        data, self.buffer = self.buffer, b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not closed in time; got {data[-300:]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return data
            data += chunk

    def drain(self, quiet: float = 0.05) -> bytes:
        """Whatever arrives until ``quiet`` seconds pass without data."""
        data, self.buffer = self.buffer, b""
        while True:
            self.sock.settimeout(quiet)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return data
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return data
            data += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- line chat -------------------------------------------------------------------------------

LINE_PROMPT = "*** Choose a nick:"


class LineUser(RawClient):
    """A line-chat user with a nick (text mode)."""

    def __init__(
        self, port: int, nick: str, *, source: str = ATTACKER, timeout: float = 5.0
    ) -> None:
        super().__init__(port, source=source, timeout=timeout)
        self.nick = nick
        self.expect(LINE_PROMPT)
        self.send_line(nick)
        self.expect(f"*** You are {nick}.")

    def on_line(self, line: str) -> None:
        if line.startswith("-!- ping: are you there?"):
            self.send(b"\r\n")

    def join(self, room: str) -> None:
        self.send_line(f"/join {room}")
        self.expect(f"*** now talking in #{room}")

    def sync(self, token: str = "") -> None:
        """Wait until everything sent before has been handled (``/ping`` answers in order)."""
        self.send_line("/ping")
        self.expect(lambda line: line == "*** pong")


# -- IRC -------------------------------------------------------------------------------------


class IrcUser(RawClient):
    """An IRC client, registered (001 seen) unless ``register`` is false; answers PING."""

    def __init__(
        self,
        port: int,
        nick: str,
        *,
        source: str = ATTACKER,
        timeout: float = 5.0,
        register: bool = True,
    ) -> None:
        super().__init__(port, source=source, timeout=timeout)
        self.nick = nick
        if register:
            self.send(f"NICK {nick}\r\nUSER {nick[:10]} 0 * :hostile battery\r\n".encode())
            self.expect(lambda line: f" 001 {nick} " in line)
            self.expect(lambda line: " 376 " in line or " 422 " in line)

    def on_line(self, line: str) -> None:
        if line.startswith("PING "):
            self.send(b"PONG " + line[5:].encode() + b"\r\n")

    def join(self, channel: str) -> None:
        self.send_line(f"JOIN {channel}")
        self.expect(lambda line: " 366 " in line and channel in line)

    def sync(self, token: str = "sync") -> None:
        """Wait until everything sent before has been handled."""
        self.send_line(f"PING :{token}")
        self.expect(lambda line: " PONG " in line and line.endswith(token))


def irc_command(line: str) -> tuple[str, list[str]]:
    """(command or numeric, params) of a received IRC line (tags and source dropped)."""
    if line.startswith("@"):
        line = line.partition(" ")[2]
    if line.startswith(":"):
        line = line.partition(" ")[2]
    head, sep, trailing = line.partition(" :")
    words = head.split()
    params = words[1:] + ([trailing] if sep else [])
    return (words[0] if words else ""), params


# -- XMPP ------------------------------------------------------------------------------------


class XmlReader:
    """The client's side of an XMPP stream: top-level elements as they complete."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.parser = etree.XMLPullParser(
            events=("start", "end"), resolve_entities=False, no_network=True
        )
        self.depth = 0
        self.opened = False
        self.ended = False

    def feed(self, data: bytes) -> list[Any]:
        out: list[Any] = []
        self.parser.feed(data)
        for event, el in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    self.opened = True
            else:
                self.depth -= 1
                if self.depth == 1:
                    out.append(el)
                    parent = el.getparent()
                    if parent is not None:
                        parent.remove(el)
                elif self.depth == 0:
                    self.ended = True
        return out


def local(el: Any) -> str:
    return etree.QName(el).localname


def stream_error_of(el: Any) -> str | None:
    """The condition of a ``<stream:error>`` element, else None."""
    if etree.QName(el).namespace != NS_STREAMS or local(el) != "error":
        return None
    for child in el:
        qname = etree.QName(child)
        if qname.namespace == NS_STREAM_ERRORS and qname.localname != "text":
            return qname.localname
    return "?"


class XmppClient:
    """A raw XMPP stream: send bytes, read top-level elements; ``login`` negotiates."""

    def __init__(
        self, port: int, *, source: str = ATTACKER, timeout: float = 5.0, open_stream: bool = True
    ) -> None:
        self.sock = connect(port, source=source, timeout=timeout)
        OPEN.append(self)
        self.timeout = timeout
        self.reader = XmlReader()
        self.pending: list[Any] = []
        self.closed = False
        self.stream_error: str | None = None
        self.jid: str | None = None
        self.ids = 0
        self.on_element: Callable[[Any], bool] | None = None
        if open_stream:
            self.open()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def open(self) -> Any:
        """Send a stream header; return the server's features."""
        self.reader.reset()
        self.send(XMPP_HEADER)
        return self.expect(lambda el: local(el) == "features")

    def next_id(self) -> str:
        self.ids += 1
        return f"h{self.ids}"

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no element in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise Closed(f"closed (stream error: {self.stream_error})")
        try:
            elements = self.reader.feed(chunk)
        except etree.XMLSyntaxError as err:
            raise AssertionError(f"the server sent bad XML: {err}: {chunk[-200:]!r}") from err
        for el in elements:
            condition = stream_error_of(el)
            if condition is not None:
                self.stream_error = condition
            if self.on_element is not None and self.on_element(el):
                continue
            self.pending.append(el)

    def next(self, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            self._fill(deadline)
        return self.pending.pop(0)

    def expect(self, test: Callable[[Any], bool], timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            el = self.next(max(deadline - time.monotonic(), 0.001))
            if test(el):
                return el

    def until_closed(self, timeout: float | None = None) -> str | None:
        """Read until the server closes; return the stream error condition (or None)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                self._fill(deadline)
        except Closed:
            return self.stream_error

    def register(self, username: str, password: str) -> Any:
        """In-band registration (XEP-0077) before authentication; the IQ answer."""
        iq_id = self.next_id()
        self.send(
            f"<iq type='set' id='{iq_id}'><query xmlns='jabber:iq:register'>"
            f"<username>{username}</username><password>{password}</password></query></iq>"
        )
        return self.expect(lambda el: el.get("id") == iq_id)

    def auth_plain(self, username: str, password: str) -> Any:
        """SASL PLAIN; the ``success`` or ``failure`` element."""
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        return self.expect(lambda el: local(el) in ("success", "failure"))

    def login(self, username: str, password: str, resource: str) -> str:
        """Authenticate and bind; the full JID."""
        result = self.auth_plain(username, password)
        if local(result) != "success":
            raise AssertionError(f"login of {username} failed: {etree.tostring(result)!r}")
        self.open()
        iq_id = self.next_id()
        self.send(
            f"<iq type='set' id='{iq_id}'><bind xmlns='{NS_BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        answer = self.expect(lambda el: el.get("id") == iq_id)
        jid = answer.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        if not jid:
            raise AssertionError(f"bind failed: {etree.tostring(answer)!r}")
        self.jid = jid
        return jid

    def join_room(self, room: str, nick: str) -> None:
        """Enter a MUC room; returns once our own presence (status 110) is back."""
        self.send(
            f"<presence to='{room}@{MUC_DOMAIN}/{nick}'><x xmlns='{NS_MUC}'>"
            "<history maxstanzas='0'/></x></presence>"
        )
        self.expect(
            lambda el: (
                local(el) == "presence"
                and (el.get("from") or "").lower() == f"{room}@{MUC_DOMAIN}/{nick}".lower()
            )
        )

    def ping(self, timeout: float | None = None) -> None:
        """An XEP-0199 ping to the server, answered in order after what was sent before."""
        iq_id = self.next_id()
        self.send(f"<iq type='get' id='{iq_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.expect(lambda el: el.get("id") == iq_id, timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def xmpp_user(
    port: int, username: str, password: str, *, source: str, resource: str = "r", register: bool
) -> XmppClient:
    """A bound XMPP session, registering the account first when asked."""
    if register:
        reg = XmppClient(port, source=source)
        answer = reg.register(username, password)
        if answer.get("type") != "result":
            raise AssertionError(f"registering {username}: {etree.tostring(answer)!r}")
        reg.close()
    client = XmppClient(port, source=source)
    client.login(username, password, resource)
    client.send("<presence/>")
    return client
