"""Steady chat over a cluster, counted: who sent what, what the server acknowledged, who got it.

A :class:`Talker` is an IRC user with ``echo-message``: the echo of its own message is the
server's acknowledgement (the message was accepted, delivered on its node, queued for the
store, and taken by Redis for the other nodes).  :func:`pump` reads what every talker has received without
blocking, so one thread drives many talkers at a steady rate.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


class Talker:
    """An IRC user in one room, saying ``<nick>-<n>`` and recording what comes back."""

    def __init__(
        self,
        port: int,
        nick: str,
        *,
        room: str = "load",
        password: str | None = None,
        label: str | None = None,
    ) -> None:
        self.nick = nick
        self.room = room
        # Messages are named by the talker's label, which stays when a reconnection must
        # take the nick again.
        self.label = label or nick
        self.sent: list[str] = []
        self.acknowledged: dict[str, float] = {}
        self.refusals: dict[str, str] = {}
        # sender label -> texts received from it, in order
        self.heard: dict[str, list[str]] = {}
        self.alive = True
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

    def say(self) -> str:
        text = f"{self.label}-{len(self.sent)}"
        self.sent.append(text)
        self.client.send(f"@label={text} PRIVMSG #{self.room} :{text}")
        return text

    def line(self) -> bytes:
        """The next message's line, counted as sent, for the caller to send (with others in
        one write)."""
        text = f"{self.label}-{len(self.sent)}"
        self.sent.append(text)
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
            sender_label = body.rsplit("-", 1)[0]
            if text.startswith(f":{self.nick}!") and "label" in tags:
                self.acknowledged[body] = time.monotonic()
            elif sender_label != self.label:
                self.heard.setdefault(sender_label, []).append(body)
        elif " FAIL PRIVMSG " in text and "label" in tags:
            self.refusals[tags["label"]] = text

    def pump(self) -> None:
        """Read what has arrived, without waiting."""
        if not self.alive:
            return
        try:
            while True:
                self.handle(self.client.read_line(0.001))
        except TimeoutError:
            pass
        except OSError:
            # The node went away (ConnectionError is an OSError).
            self.alive = False

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


def pump(talkers: Iterable[Talker], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        for talker in talkers:
            talker.pump()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.002)


def talk(talkers: Callable[[], list[Talker]], seconds: float, rate: float = 10.0) -> None:
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
