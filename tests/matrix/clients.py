"""Real clients of the three protocols behind one small interface, for the transcript runner.

Every client is a *peer*: it has a nick and a protocol, performs chat actions in its own
protocol's way (``join``, ``say``, ``kick``, …) and keeps what the server sends it as
*items* in that protocol's native form:

* IRC: :class:`IrcLine` (tags, source nick, command, params), read from the raw socket;
* line chat: a ``dict`` per JSON Lines record, or a ``str`` per text line;
* XMPP: an ``xml.etree`` element per top-level stanza, taken from slixmpp's input.

``sync()`` is a round trip (IRC PING, line ``ping``, XMPP ping IQ): it returns every item
received since the previous call.  The server handles each connection's input in order on
one reactor thread and writes an event to every recipient in the turn that caused it, so
after the actor's ``sync()`` returns, each observer's ``sync()`` holds everything the action
produced for that observer: "exactly once" is a count, never a wait for a timeout.
"""

from __future__ import annotations

import copy
import itertools
import json
import queue
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import irc.client

from tests.support.server import LineClient
from tests.support.xmpp_client import DOMAIN, WAIT, SlixmppClient

MUC = f"conference.{DOMAIN}"

NS_CLIENT = "jabber:client"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"

_tokens = itertools.count(1)


def token() -> str:
    return f"sync{next(_tokens)}"


# Folded nick -> the account its peer is logged in to (every XMPP peer; IRC peers with SASL,
# line peers with a password).  Nicks are never reused across tests (World.nick).
ACCOUNT_OF: dict[str, str] = {}


def _renamed(old: str, new: str) -> None:
    """A logged-in peer keeps its account under its new nick."""
    account = ACCOUNT_OF.get(old.lower())
    if account is not None:
        ACCOUNT_OF[new.lower()] = account


def address(nick: str) -> str:
    """The bare JID an XMPP user sees for ``nick``: its account's, or its guest address."""
    account = ACCOUNT_OF.get(nick.lower())
    return f"{account}@{DOMAIN}" if account is not None else f"~{nick.lower()}@{DOMAIN}"


class LoginFailed(Exception):
    """The server refused the credentials."""


class Peer:
    """What the runner needs of any client."""

    protocol: str = "?"
    nick: str = ""
    # How the runner refers to it in messages: ``alice@irc``.
    label: str = ""

    def sync(self) -> list[Any]:
        raise NotImplementedError

    def expect(self, test: Callable[[Any], bool], timeout: float = WAIT) -> Any:
        """Read (and consume) items until one passes ``test``."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.nick}>"


# -- IRC ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IrcLine:
    tags: dict[str, str]
    source: str | None
    command: str
    params: tuple[str, ...]
    raw: str = field(compare=False)

    @property
    def nick(self) -> str | None:
        return self.source.split("!", 1)[0] if self.source else None

    @property
    def last(self) -> str:
        return self.params[-1] if self.params else ""


_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def _unescape_tag(value: str) -> str:
    out, chars = [], iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def parse_irc(raw: str) -> IrcLine:
    """An IRC line as a client reads it (written here, not taken from the server's parser)."""
    rest = raw
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        for item in tag_text.split(";"):
            key, _, value = item.partition("=")
            tags[key] = _unescape_tag(value)
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
    params: list[str] = []
    command, _, rest = rest.partition(" ")
    while rest:
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        word, _, rest = rest.partition(" ")
        if word:
            params.append(word)
    return IrcLine(tags, source, command.upper(), tuple(params), raw)


class IrcPeer(Peer):
    """A raw IRC client over a socket: exact lines in and out."""

    protocol = "irc"

    def __init__(
        self,
        port: int,
        nick: str,
        *,
        caps: Iterable[str] = (),
        sasl: tuple[str, str] | None = None,
        password: str | None = None,
    ) -> None:
        self.nick = nick
        self.label = f"{nick}@irc"
        self.client = LineClient(port, timeout=WAIT)
        self.pending: list[IrcLine] = []
        caps = list(caps)
        if sasl is not None and "sasl" not in caps:
            caps.append("sasl")
        if caps:
            self.send("CAP LS 302")
            self.send("CAP REQ :" + " ".join(caps))
        if password is not None:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick} the tester")
        if caps:
            ack = self.expect(
                lambda m: m.command == "CAP" and len(m.params) > 1 and m.params[1] in ("ACK", "NAK")
            )
            assert ack.params[1] == "ACK", ack.raw
        if sasl is not None:
            import base64

            self.send("AUTHENTICATE PLAIN")
            self.expect(lambda m: m.command == "AUTHENTICATE")
            user, secret = sasl
            blob = base64.b64encode(f"{user}\0{user}\0{secret}".encode()).decode()
            self.send(f"AUTHENTICATE {blob}")
            done = self.expect(lambda m: m.command in ("903", "904", "902", "905"))
            assert done.command == "903", done.raw
            ACCOUNT_OF[nick.lower()] = user.lower()
        if caps:
            self.send("CAP END")
        welcome = self.expect(lambda m: m.command in ("001", "433", "432"))
        assert welcome.command == "001", welcome.raw
        self.nick = welcome.params[0]
        # What came after the welcome (a nick enforcement notice…) stays to be read.
        self.pending = self.sync()

    def send(self, line: str) -> None:
        self.client.send(line.encode("utf-8"))

    def _read(self, timeout: float) -> IrcLine:
        line = parse_irc(self.client.read_line(timeout))
        if line.command == "PING":
            # The server's keep-alive probe; not something a test waits for.
            self.send(f"PONG :{line.last}")
        return line

    def expect(self, test: Callable[[Any], bool], timeout: float = WAIT) -> IrcLine:
        deadline = time.monotonic() + timeout
        while self.pending:
            line = self.pending.pop(0)
            if test(line):
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: nothing matched; last lines {self.client.seen[-15:]}"
                )
            line = self._read(remaining)
            if test(line):
                return line

    def sync(self) -> list[IrcLine]:
        tok = token()
        self.send(f"PING :{tok}")
        got, self.pending = self.pending, []
        deadline = time.monotonic() + WAIT
        while True:
            line = self._read(max(deadline - time.monotonic(), 0.01))
            if line.command == "PONG" and line.last == tok:
                return got
            got.append(line)

    # -- actions ----------------------------------------------------------------------------

    def join(self, room: str, key: str | None = None) -> None:
        self.send(f"JOIN #{room}" + (f" {key}" if key else ""))

    def part(self, room: str, reason: str = "") -> None:
        self.send(f"PART #{room}" + (f" :{reason}" if reason else ""))

    def say(self, room: str, text: str) -> None:
        for piece in text.split("\n"):
            self.send(f"PRIVMSG #{room} :{piece}")

    def act(self, room: str, text: str) -> None:
        self.send(f"PRIVMSG #{room} :\x01ACTION {text}\x01")

    def notice(self, room: str, text: str) -> None:
        self.send(f"NOTICE #{room} :{text}")

    def msg(self, nick: str, text: str, *, action: bool = False) -> None:
        body = f"\x01ACTION {text}\x01" if action else text
        self.send(f"PRIVMSG {nick} :{body}")

    def quit(self, reason: str) -> None:
        self.send(f"QUIT :{reason}")

    def rename(self, new: str) -> None:
        self.send(f"NICK {new}")
        _renamed(self.nick, new)
        self.nick = new

    def topic(self, room: str, text: str) -> None:
        self.send(f"TOPIC #{room} :{text}")

    def kick(self, room: str, nick: str, reason: str) -> None:
        self.send(f"KICK #{room} {nick} :{reason}")

    def ban(self, room: str, mask: str) -> None:
        self.send(f"MODE #{room} +b {mask}")

    def mode(self, room: str, change: str, arg: str | None = None) -> None:
        self.send(f"MODE #{room} {change}" + (f" {arg}" if arg else ""))

    def away(self, text: str | None) -> None:
        self.send(f"AWAY :{text}" if text else "AWAY")

    def invite(self, nick: str, room: str) -> None:
        self.send(f"INVITE {nick} #{room}")

    def close(self) -> None:
        self.client.close()


class IrcPkgPeer(Peer):
    """The ``irc`` package's client (jaraco), pumped by hand in this thread.

    It keeps the package's own event objects: a different parser, and the client library
    that bots are written with.  Only used as an actor (its receiving side is plainer than
    the raw client's, so assertions on what IRC users see use :class:`IrcPeer`).
    """

    protocol = "irc"

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.label = f"{nick}@irc(pkg)"
        self.reactor = irc.client.Reactor()
        self.events: list[irc.client.Event] = []
        self._next = 0
        self.reactor.add_global_handler("all_events", self._record, -10)
        self.conn = self.reactor.server().connect("127.0.0.1", port, nick, username=nick)
        self.expect(lambda e: e.type == "welcome")

    def _record(self, connection: Any, event: irc.client.Event) -> None:
        self.events.append(event)

    def expect(self, test: Callable[[Any], bool], timeout: float = WAIT) -> irc.client.Event:
        deadline = time.monotonic() + timeout
        while True:
            while self._next < len(self.events):
                event = self.events[self._next]
                self._next += 1
                if test(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e.type, e.arguments) for e in self.events[-15:]]
                raise AssertionError(f"{self.label}: nothing matched; seen {seen}")
            self.reactor.process_once(0.02)

    def sync(self) -> list[irc.client.Event]:
        tok = token()
        start = self._next
        self.conn.ping(tok)
        self.expect(lambda e: e.type == "pong" and tok in e.arguments)
        return self.events[start : self._next - 1]

    def join(self, room: str, key: str | None = None) -> None:
        self.conn.join(f"#{room}", key or "")

    def part(self, room: str, reason: str = "") -> None:
        # COMPAT: the irc package's part() sends the reason without the ':' of a trailing
        # parameter, so only its first word would arrive.
        self.conn.send_items("PART", f"#{room}", f":{reason}" if reason else "")

    def say(self, room: str, text: str) -> None:
        self.conn.privmsg(f"#{room}", text)

    def act(self, room: str, text: str) -> None:
        self.conn.action(f"#{room}", text)

    def notice(self, room: str, text: str) -> None:
        self.conn.notice(f"#{room}", text)

    def msg(self, nick: str, text: str, *, action: bool = False) -> None:
        if action:
            self.conn.action(nick, text)
        else:
            self.conn.privmsg(nick, text)

    def quit(self, reason: str) -> None:
        self.conn.quit(reason)

    def rename(self, new: str) -> None:
        self.conn.nick(new)
        _renamed(self.nick, new)
        self.nick = new

    def topic(self, room: str, text: str) -> None:
        self.conn.topic(f"#{room}", text)

    def kick(self, room: str, nick: str, reason: str) -> None:
        self.conn.kick(f"#{room}", nick, reason)

    def ban(self, room: str, mask: str) -> None:
        self.conn.mode(f"#{room}", f"+b {mask}")

    def mode(self, room: str, change: str, arg: str | None = None) -> None:
        self.conn.mode(f"#{room}", change + (f" {arg}" if arg else ""))

    def away(self, text: str | None) -> None:
        self.conn.send_items("AWAY", f":{text}" if text else "")

    def invite(self, nick: str, room: str) -> None:
        self.conn.invite(nick, f"#{room}")

    def close(self) -> None:
        self.conn.close()


# -- line chat ------------------------------------------------------------------------------------


class LinePeer(Peer):
    """A line-chat client in JSON Lines mode (``json=True``) or in text mode."""

    protocol = "line"

    def __init__(
        self, port: int, nick: str, *, json_mode: bool = True, password: str | None = None
    ) -> None:
        """``password``: log in to the account ``nick`` (``/identify``) instead of just
        taking the nick; a refusal raises :class:`LoginFailed`."""
        self.nick = nick
        self.json = json_mode
        self.label = f"{nick}@line" + ("" if json_mode else "(text)")
        self.client = LineClient(port, timeout=WAIT)
        self.pending: list[Any] = []
        self.client.expect("*** Choose a nick:")
        if json_mode:
            self.client.send("/format json")
            self.expect(lambda o: o.get("type") == "ok" and o.get("cmd") == "format")
            if password is not None:
                self.cmd("identify", nick=nick, password=password)
                ok = self.expect(lambda o: o.get("cmd") == "identify" and o["type"] != "join")
                if ok["type"] != "ok":
                    self.close()
                    raise LoginFailed(f"{nick}: {ok}")
                self.nick = ok["nick"]
                ACCOUNT_OF[self.nick.lower()] = nick.lower()
            else:
                self.cmd("nick", nick=nick)
                ok = self.expect(
                    lambda o: o.get("cmd") == "nick" and o.get("type") in ("ok", "error")
                )
                assert ok["type"] == "ok", ok
        else:
            self.client.send(nick)
            self.expect(lambda s: s.startswith(f"*** You are {nick}."))
        # What came after the welcome (a nick enforcement notice…) stays to be read.
        self.pending = self.sync()

    def _read(self, timeout: float) -> Any:
        text = self.client.read_line(timeout)
        if not self.json or not text.startswith("{"):
            if text == "-!- ping: are you there? (any line answers)":
                self.client.send("/ping")
            return text
        obj = json.loads(text)
        if obj.get("type") == "ping":
            self.cmd("ping")
        return obj

    def expect(self, test: Callable[[Any], bool], timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while self.pending:
            item = self.pending.pop(0)
            if _safe(test, item):
                return item
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: nothing matched; last lines {self.client.seen[-15:]}"
                )
            item = self._read(remaining)
            if _safe(test, item):
                return item

    def sync(self) -> list[Any]:
        got, self.pending = self.pending, []
        deadline = time.monotonic() + WAIT
        if self.json:
            tok = token()
            self.cmd("ping", tag=tok)
            while True:
                item = self._read(max(deadline - time.monotonic(), 0.01))
                if isinstance(item, dict) and item.get("cmd") == "ping" and item.get("tag") == tok:
                    return got
                got.append(item)
        self.client.send("/ping")
        while True:
            item = self._read(max(deadline - time.monotonic(), 0.01))
            if item == "*** pong":
                return got
            got.append(item)

    def cmd(self, name: str, **fields: Any) -> None:
        """A JSON command (JSON mode) or the ``/command`` line (text mode) for ``raw``."""
        assert self.json, "JSON commands need JSON mode"
        self.client.send(json.dumps({"cmd": name, **fields}, ensure_ascii=False).encode("utf-8"))

    def line(self, text: str) -> None:
        self.client.send(text.encode("utf-8"))

    # -- actions ----------------------------------------------------------------------------

    def _do(self, name: str, text_line: str, **fields: Any) -> None:
        if self.json:
            self.cmd(name, **{k: v for k, v in fields.items() if v is not None})
        else:
            self.line(text_line)

    def join(self, room: str, key: str | None = None) -> None:
        self._do("join", f"/join {room}" + (f" {key}" if key else ""), room=room, key=key)

    def part(self, room: str, reason: str = "") -> None:
        self._do("part", f"/part #{room} {reason}".rstrip(), room=room, reason=reason or None)

    def say(self, room: str, text: str) -> None:
        if self.json:
            self.cmd("say", room=room, text=text)
        else:
            # Text mode sends to the current room; `//` starts a message with a slash.
            for piece in text.split("\n"):
                self.line(f"/say #{room} {piece}")

    def plain(self, text: str) -> None:
        """Text mode: a plain line says ``text`` in the current room (``//`` for a leading ``/``)."""
        assert not self.json
        for piece in text.split("\n"):
            self.line("/" + piece if piece.startswith("/") else piece)

    def act(self, room: str, text: str) -> None:
        self._do("me", f"/me #{room} {text}", room=room, text=text)

    def notice(self, room: str, text: str) -> None:
        self._do("notice", f"/notice #{room} {text}", to=f"#{room}", text=text)

    def msg(self, nick: str, text: str, *, action: bool = False) -> None:
        if action:
            self._do("me", f"/me {nick} {text}", to=nick, text=text)
        else:
            self._do("msg", f"/msg {nick} {text}", to=nick, text=text)

    def quit(self, reason: str) -> None:
        self._do("quit", f"/quit {reason}", reason=reason)

    def rename(self, new: str) -> None:
        self._do("nick", f"/nick {new}", nick=new)
        _renamed(self.nick, new)
        self.nick = new

    def topic(self, room: str, text: str) -> None:
        self._do("topic", f"/topic #{room} {text}", room=room, text=text)

    def kick(self, room: str, nick: str, reason: str) -> None:
        self._do("kick", f"/kick #{room} {nick} {reason}", room=room, nick=nick, reason=reason)

    def ban(self, room: str, mask: str) -> None:
        self._do("ban", f"/ban #{room} {mask}", room=room, mask=mask)

    def mode(self, room: str, change: str, arg: str | None = None) -> None:
        changes = change + (f" {arg}" if arg else "")
        self._do("mode", f"/mode {room} {changes}", room=room, changes=changes)

    def away(self, text: str | None) -> None:
        self._do("away", f"/away {text}" if text else "/away", text=text)

    def invite(self, nick: str, room: str) -> None:
        self._do("invite", f"/invite {nick} {room}", nick=nick, room=room)

    def close(self) -> None:
        self.client.close()


def _safe(test: Callable[[Any], bool], item: Any) -> bool:
    try:
        return bool(test(item))
    except (KeyError, TypeError, AttributeError):
        return False


# -- XMPP -----------------------------------------------------------------------------------------


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def local(el: ET.Element) -> str:
    return el.tag.rpartition("}")[2]


def child(el: ET.Element, ns: str, tag: str) -> ET.Element | None:
    return el.find(q(ns, tag))


def child_text(el: ET.Element, ns: str, tag: str) -> str | None:
    found = el.find(q(ns, tag))
    return None if found is None else (found.text or "")


def muc_x(el: ET.Element) -> ET.Element | None:
    return el.find(q(NS_MUC_USER, "x"))


def status_codes(el: ET.Element) -> set[str]:
    x = muc_x(el)
    if x is None:
        return set()
    return {s.get("code", "") for s in x.findall(q(NS_MUC_USER, "status"))}


def muc_item(el: ET.Element) -> ET.Element | None:
    x = muc_x(el)
    return None if x is None else x.find(q(NS_MUC_USER, "item"))


def room_jid(room: str) -> str:
    return f"{room}@{MUC}"


class XmppPeer(SlixmppClient, Peer):
    """slixmpp on an asyncio loop in its own thread; every stanza it receives is queued.

    ``register=True`` creates the account first by in-band registration (XEP-0077), as a
    client's "create account" does; a refused login raises :class:`LoginFailed`.
    """

    protocol = "xmpp"

    def __init__(
        self,
        port: int,
        account: str,
        password: str,
        *,
        resource: str = "matrix",
        register: bool = False,
        presence: bool = True,
    ) -> None:
        self.nick = account
        self.account = account
        ACCOUNT_OF[account.lower()] = account.lower()
        self.label = f"{account}@xmpp"
        self.inbox: queue.Queue[ET.Element] = queue.Queue()
        self.pending: list[ET.Element] = []
        plugins = ["xep_0030", "xep_0045", "xep_0199", "xep_0203", "xep_0359", "xep_0004"]
        if register:
            plugins += ["xep_0066", "xep_0077"]

        def setup(xmpp: Any) -> None:
            original = xmpp.incoming_filter

            def capture(xml: ET.Element) -> ET.Element:
                self.inbox.put(copy.deepcopy(xml))
                return original(xml)

            xmpp.incoming_filter = capture
            if register:

                async def create(form: Any) -> None:
                    iq = xmpp.Iq()
                    iq["type"] = "set"
                    iq["register"]["username"] = account
                    iq["register"]["password"] = password
                    await iq.send()

                xmpp.add_event_handler("register", create)

        super().__init__(
            port, f"{account}@{DOMAIN}/{resource}", password, plugins=plugins, setup=setup
        )
        if not self.logged_in:
            self.close()
            raise LoginFailed(self.jid)
        if presence:
            self.do(self.xmpp.send_presence)
        # What came after the welcome (a nick enforcement notice…) stays to be read.
        self.pending = self.sync()

    # -- plumbing ---------------------------------------------------------------------------

    def raw(self, xml: str) -> None:
        # Through slixmpp's send queue, like every stanza it sends, so that order is kept.
        self.do(self.xmpp.send, xml)

    def _get(self, timeout: float) -> ET.Element:
        try:
            return self.inbox.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            raise AssertionError(f"{self.label}: nothing received in time") from None

    def expect(self, test: Callable[[Any], bool], timeout: float = WAIT) -> ET.Element:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while self.pending:
            el = self.pending.pop(0)
            if _safe(test, el):
                return el
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.label}: nothing matched; saw {seen[-10:]}")
            try:
                el = self.inbox.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                continue
            if _safe(test, el):
                return el
            seen.append(ET.tostring(el, encoding="unicode")[:300])

    def sync(self) -> list[ET.Element]:
        tok = token()
        got, self.pending = self.pending, []
        self.raw(f"<iq type='get' id='{tok}' to='{DOMAIN}'><ping xmlns='{NS_PING}'/></iq>")
        deadline = time.monotonic() + WAIT
        while True:
            el = self._get(deadline - time.monotonic())
            if local(el) == "iq" and el.get("id") == tok:
                return got
            got.append(el)

    # -- actions ----------------------------------------------------------------------------

    def join(self, room: str, key: str | None = None) -> None:
        password = f"<password>{_esc(key)}</password>" if key else ""
        self.raw(
            f"<presence to='{room_jid(room)}/{self.nick}'>"
            f"<x xmlns='{NS_MUC}'><history maxstanzas='0'/>{password}</x></presence>"
        )

    def part(self, room: str, reason: str = "") -> None:
        status = f"<status>{_esc(reason)}</status>" if reason else ""
        self.raw(
            f"<presence type='unavailable' to='{room_jid(room)}/{self.nick}'>{status}</presence>"
        )

    def say(self, room: str, text: str) -> None:
        self.do(self.xmpp.send_message, mto=room_jid(room), mbody=text, mtype="groupchat")

    def act(self, room: str, text: str) -> None:
        self.say(room, f"/me {text}")

    def notice(self, room: str, text: str) -> None:
        raise NotImplementedError("XMPP has no notices")

    def msg(self, nick: str, text: str, *, action: bool = False) -> None:
        body = f"/me {text}" if action else text
        self.do(self.xmpp.send_message, mto=address(nick), mbody=body, mtype="chat")

    def quit(self, reason: str) -> None:
        # What XMPP clients do on quitting: a last unavailable presence carrying the reason.
        self.do(self.xmpp.send_presence, ptype="unavailable", pstatus=reason)
        self.close()

    def rename(self, new: str) -> None:
        """A nick change in a room (XEP-0045 §7.6): presence to the new occupant JID."""
        raise NotImplementedError("use rename_in(room, new)")

    def rename_in(self, room: str, new: str) -> None:
        self.raw(f"<presence to='{room_jid(room)}/{new}'/>")
        self.nick = new
        ACCOUNT_OF[new.lower()] = self.account.lower()

    def topic(self, room: str, text: str) -> None:
        self.do(self.muc.set_subject, room_jid(room), text)

    def kick(self, room: str, nick: str, reason: str) -> None:
        self.wait(self.muc.set_role, room_jid(room), nick, "none", reason=reason)

    def outcast(self, room: str, nick: str, reason: str) -> None:
        self.wait(
            self.muc.set_affiliation,
            room_jid(room),
            "outcast",
            jid=address(nick),
            reason=reason,
        )

    def set_role(self, room: str, nick: str, role: str) -> None:
        self.wait(self.muc.set_role, room_jid(room), nick, role)

    def configure(self, room: str, fields: dict[str, str]) -> None:
        """Submit the room configuration form (XEP-0045 §10.2) with these fields."""
        items = "".join(
            f"<field var='muc#roomconfig_{var}'><value>{_esc(value)}</value></field>"
            for var, value in fields.items()
        )
        form = (
            f"<x xmlns='{NS_DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
            f"{items}</x>"
        )
        iq = self.xmpp.make_iq_set(ito=room_jid(room))
        iq.append(ET.fromstring(f"<query xmlns='{NS_MUC_OWNER}'>{form}</query>"))
        self.wait(iq.send, timeout=WAIT)

    def away(self, text: str | None) -> None:
        if text is None:
            self.do(self.xmpp.send_presence)
        else:
            self.do(self.xmpp.send_presence, pshow="away", pstatus=text)

    def invite(self, nick: str, room: str) -> None:
        self.do(self.muc.invite, room_jid(room), address(nick))


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )
