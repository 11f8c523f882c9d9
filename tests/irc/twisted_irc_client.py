"""A Twisted ``IRCClient`` in its own process, driven through stdin and reporting on stdout.

Run as ``python -m tests.irc.twisted_irc_client HOST PORT NICK``.  Commands, one a line:
``join #room``, ``say <target> <text>``, ``me <target> <text>``, ``notice <target> <text>``,
``raw <line>``, ``quit [reason]``.  Each event is printed as one tab-separated line:
``SIGNEDON nick``, ``JOINED #room``, ``USERJOINED nick #room``, ``PRIVMSG nick target text``,
``NOTICE …``, ``ACTION …``, ``LINE <raw line>`` (every line from the server) and ``LOST``.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import protocol, reactor, stdio
from twisted.protocols.basic import LineReceiver
from twisted.words.protocols import irc


def emit(*fields: str) -> None:
    sys.stdout.write("\t".join(fields) + "\n")
    sys.stdout.flush()


class Client(irc.IRCClient):
    def __init__(self, nick: str) -> None:
        self.nickname = nick
        self.username = nick
        self.realname = f"{nick} (Twisted)"

    def lineReceived(self, line: bytes) -> None:
        emit("LINE", line.decode("utf-8", "replace"))
        super().lineReceived(line)

    def signedOn(self) -> None:
        control.client = self
        emit("SIGNEDON", self.nickname)

    def joined(self, channel: str) -> None:
        emit("JOINED", channel)

    def userJoined(self, user: str, channel: str) -> None:
        emit("USERJOINED", user.split("!")[0], channel)

    def privmsg(self, user: str, channel: str, message: str) -> None:
        emit("PRIVMSG", user.split("!")[0], channel, message)

    def noticed(self, user: str, channel: str, message: str) -> None:
        emit("NOTICE", user.split("!")[0], channel, message)

    def action(self, user: str, channel: str, data: str) -> None:
        emit("ACTION", user.split("!")[0], channel, data)


class Control(LineReceiver):
    delimiter = b"\n"
    client: Client | None = None

    def lineReceived(self, line: bytes) -> None:
        verb, _, rest = line.decode().strip().partition(" ")
        client = self.client
        if client is None:
            emit("ERROR", "not signed on")
            return
        if verb == "join":
            client.join(rest.lstrip("#"))
        elif verb in ("say", "me", "notice"):
            target, _, text = rest.partition(" ")
            {"say": client.msg, "me": client.describe, "notice": client.notice}[verb](target, text)
        elif verb == "raw":
            client.sendLine(rest)
        elif verb == "quit":
            client.quit(rest)


class Factory(protocol.ClientFactory):
    def __init__(self, nick: str) -> None:
        self.nick = nick

    def buildProtocol(self, addr: Any) -> Client:
        return Client(self.nick)

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        emit("LOST")
        reactor.stop()  # type: ignore[attr-defined]

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        emit("FAILED", str(reason.value))
        reactor.stop()  # type: ignore[attr-defined]


control = Control()

if __name__ == "__main__":
    host, port, nick = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stdio.StandardIO(control)
    reactor.connectTCP(host, port, Factory(nick))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
