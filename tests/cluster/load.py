"""Steady chat over a cluster, counted: who sent what, what the server acknowledged, who got it.

Every talker says ``<label>-<n>`` in one room and takes what the server shows it back of its
own message as the server's acknowledgement (the message was accepted, delivered on its
node, queued for the store, and taken by Redis for the other nodes):

- a :class:`Talker` is an IRC user with ``echo-message``: the echo;
- an :class:`XmppTalker` is an XMPP user in a MUC room: the room's reflection of its
  groupchat message;
- a :class:`LineTalker` is a line-chat user with ``/echo on``: its message shown back.

:func:`pump` reads what every talker has received without blocking, so one thread drives
many talkers at a steady rate.
"""

from __future__ import annotations

import base64
import re
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.hostile.clients import MUC_DOMAIN, NS_MUC, local, xmpp_user
from tests.support.server import LineClient


class Refused(Exception):
    """The server would not register the nick (the line it answered with)."""


@dataclass
class Counts:
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0
    stored: int = 0
    refused: int = 0
    lost: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged}, refused {self.refused},"
            f" delivered {self.delivered}, stored {self.stored}, lost {len(self.lost)}"
        )


class Speaker:
    """A user in one room saying ``<label>-<n>``: what it sent, what the server acknowledged,
    and what it heard of the others (by their label, in the order it came).  Each protocol
    says how its messages go on the wire (:meth:`wire`), how to read what comes
    (:meth:`receive`, :meth:`handle`) and who is in the room (:meth:`members`)."""

    client: Any

    def __init__(self, nick: str, room: str, label: str | None) -> None:
        self.nick = nick
        self.room = room
        # Messages are named by the talker's label, which stays when a reconnection must
        # take the nick again.
        self.label = label or nick
        self.sent: list[str] = []
        self.acknowledged: dict[str, float] = {}
        # sender label -> texts received from it, in order
        self.heard: dict[str, list[str]] = {}
        self.alive = True

    def wire(self, text: str) -> bytes:
        """The bytes that say ``text`` in the room."""
        raise NotImplementedError

    def receive(self, timeout: float) -> Any:
        """The next thing the server sent (TimeoutError when nothing came in time)."""
        raise NotImplementedError

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def members(self) -> set[str]:
        """The room's members as the talker's node sees them."""
        raise NotImplementedError

    def line(self) -> bytes:
        """The next message's bytes, counted as sent, for the caller to send (with others in
        one write)."""
        text = f"{self.label}-{len(self.sent)}"
        self.sent.append(text)
        return self.wire(text)

    def say(self) -> str:
        self.client.send(self.line())
        return self.sent[-1]

    def said(self, body: str, own: bool) -> None:
        """A room message came: the talker's own shown back (acknowledged), or another's."""
        if own:
            self.acknowledged[body] = time.monotonic()
            return
        sender_label = body.rsplit("-", 1)[0]
        if sender_label != self.label:
            self.heard.setdefault(sender_label, []).append(body)

    def buffered(self) -> bool:
        """Whether something read is still to be received."""
        raise NotImplementedError

    def pump_ready(self) -> None:
        """Read what has arrived, not waiting for more (a part of a line or element that
        came is waited for, briefly)."""
        try:
            while self.alive and (
                self.buffered() or select.select([self.client.sock], [], [], 0)[0]
            ):
                self.handle(self.receive(0.001))
        except TimeoutError:
            pass
        except OSError:
            self.alive = False

    def pump(self) -> None:
        """Read what has arrived, without waiting."""
        if not self.alive:
            return
        try:
            while True:
                self.handle(self.receive(0.001))
        except TimeoutError:
            pass
        except OSError:
            # The node went away (ConnectionError is an OSError).
            self.alive = False


class LineSpeaker(Speaker):
    """A speaker whose protocol comes in lines (IRC, line chat), read by a LineClient."""

    client: LineClient

    def receive(self, timeout: float) -> str:
        return self.client.read_line(timeout)

    def buffered(self) -> bool:
        return b"\n" in self.client.buffer


class Talker(LineSpeaker):
    """An IRC user in one room with ``echo-message`` (its label's echo acknowledges)."""

    def __init__(
        self,
        port: int,
        nick: str,
        *,
        room: str = "load",
        password: str | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(nick, room, label)
        self.refusals: dict[str, str] = {}
        self.connect(port, password)

    def connect(self, port: int, password: str | None = None) -> None:
        """Register (with SASL PLAIN when ``password`` is given); raises :class:`Refused`
        with the server's answer when the nick is not given."""
        self.client = LineClient(port)
        self.alive = True
        caps = "echo-message labeled-response" + (" sasl" if password else "")
        self.client.send(f"CAP REQ :{caps}")
        self.client.send(f"NICK {self.nick}")
        self.client.send(f"USER {self.nick} 0 * :{self.nick}")
        self.client.expect(lambda text: " ACK " in text)
        if password is not None:
            self.client.send("AUTHENTICATE PLAIN")
            self.client.expect(lambda text: text.endswith("AUTHENTICATE +"))
            token = base64.b64encode(f"{self.nick}\0{self.nick}\0{password}".encode()).decode()
            self.client.send(f"AUTHENTICATE {token}")
            self.client.expect(lambda text: " 903 " in text)
        self.client.send("CAP END")
        answer = self.client.expect(
            lambda text: (
                f" 001 {self.nick} " in text
                or any(f" {n} " in text for n in ("432", "433", "400", "904"))
            )
        )
        if " 001 " not in answer:
            self.client.close()
            self.alive = False
            raise Refused(answer)

    def join(self) -> None:
        self.client.send(f"JOIN #{self.room}")
        self.client.expect(lambda text: f" 366 {self.nick} #{self.room} " in text)

    def wire(self, text: str) -> bytes:
        return f"@label={text} PRIVMSG #{self.room} :{text}\r\n".encode()

    def handle(self, text: str) -> None:
        if text.startswith("PING "):
            self.client.send("PONG " + text[5:])
            return
        tags = {}
        if text.startswith("@"):
            head, _, text = text[1:].partition(" ")
            tags = dict(part.partition("=")[::2] for part in head.split(";"))
        if f" PRIVMSG #{self.room} :" in text:
            body = text.rsplit(" :", 1)[1]
            self.said(body, text.startswith(f":{self.nick}!") and "label" in tags)
        elif " FAIL PRIVMSG " in text and "label" in tags:
            self.refusals[tags["label"]] = text

    def members(self) -> set[str]:
        """NAMES."""
        self.client.send(f"NAMES #{self.room}")
        found: set[str] = set()
        while True:
            text = self.client.read_line(5)
            if f" 353 {self.nick} " in text:
                found |= {n.lstrip("@+") for n in text.rsplit(" :", 1)[1].split()}
            elif f" 366 {self.nick} " in text:
                return found
            else:
                self.handle(text)

    def sync(self, timeout: float = 15.0) -> None:
        """Wait until the server has answered everything sent before (a PING's PONG)."""
        token = f"sync-{time.monotonic_ns()}"
        self.client.send(f"PING :{token}")
        deadline = time.monotonic() + timeout
        while True:
            text = self.client.read_line(max(deadline - time.monotonic(), 0.001))
            if " PONG " in text and text.endswith(token):
                return
            self.handle(text)

    def close(self) -> None:
        self.alive = False
        self.client.close()


class XmppTalker(Speaker):
    """An XMPP user in one MUC room: the room's reflection of its own groupchat message
    acknowledges it (XEP-0045 7.4: a room sends a message to every occupant, the sender
    included).  Its account is registered in band when it connects."""

    def __init__(
        self, port: int, nick: str, password: str, *, room: str = "load", label: str | None = None
    ) -> None:
        super().__init__(nick, room, label)
        self.jid = f"{room}@{MUC_DOMAIN}"
        # The room's occupants, from their presence.
        self.occupants: set[str] = set()
        self.client = xmpp_user(port, nick, password, source="127.0.0.1", register=True)

    def join(self) -> None:
        self.client.send(
            f"<presence to='{self.jid}/{self.nick}'><x xmlns='{NS_MUC}'>"
            "<history maxstanzas='0'/></x></presence>"
        )
        deadline = time.monotonic() + 10
        while self.nick not in self.occupants:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.nick} not in {self.jid}: {self.occupants}")
            self.handle(self.receive(max(deadline - time.monotonic(), 0.001)))

    def wire(self, text: str) -> bytes:
        return (
            f"<message to='{self.jid}' type='groupchat' id='{text}'><body>{text}</body></message>"
        ).encode()

    def receive(self, timeout: float) -> Any:
        return self.client.next(timeout)

    def buffered(self) -> bool:
        return bool(self.client.pending)

    def handle(self, el: Any) -> None:
        room, _, nick = (el.get("from") or "").partition("/")
        if room.lower() != self.jid or not nick:
            return
        kind = local(el)
        if kind == "presence":
            if el.get("type") == "unavailable":
                self.occupants.discard(nick)
            else:
                self.occupants.add(nick)
        elif kind == "message" and el.get("type") == "groupchat":
            body = el.findtext("{jabber:client}body")
            if body:
                self.said(body, nick == self.nick)

    def members(self) -> set[str]:
        """The occupants its presences named."""
        self.pump()
        return set(self.occupants)


# A room message in line chat's text mode: "[#room] <nick> text".
LINE_MESSAGE = re.compile(r"\[#(\S+)\] <([^>]+)> (.*)$")


class LineTalker(LineSpeaker):
    """A line-chat user in one room with ``/echo on``: its own message shown back
    acknowledges it."""

    def __init__(self, port: int, nick: str, *, room: str = "load", label: str | None = None):
        super().__init__(nick, room, label)
        self.client = LineClient(port)
        self.client.expect("*** Choose a nick:")
        self.client.send(nick)
        self.client.expect(f"*** You are {nick}.")
        self.client.send("/echo on")
        self.client.expect("*** echo: on")

    def join(self) -> None:
        self.client.send(f"/join {self.room}")
        self.client.expect(f"*** now talking in #{self.room}")

    def wire(self, text: str) -> bytes:
        # A line that is not a command goes to the room the user talks in.
        return f"{text}\r\n".encode()

    def handle(self, text: str) -> None:
        found = LINE_MESSAGE.match(text)
        if found and found.group(1) == self.room:
            self.said(found.group(3), found.group(2) == self.nick)

    def members(self) -> set[str]:
        """/who."""
        self.client.send(f"/who {self.room}")
        while True:
            text = self.client.read_line(5)
            if "members of" in text or "no such room" in text:
                _, _, names = text.partition("): ")
                return {n.lstrip("@+") for n in names.split()}
            self.handle(text)


def pump(talkers: Iterable[Speaker], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        for talker in talkers:
            talker.pump()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.002)


def talk(talkers: Callable[[], list[Speaker]], seconds: float, rate: float = 10.0) -> None:
    """Each live talker says ``rate`` messages a second for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        live = [t for t in talkers() if t.alive]
        for talker in live:
            talker.say()
        pump(live, 1 / rate)


def eventually(test: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(step)
