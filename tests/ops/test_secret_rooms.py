"""One rule for secret rooms on every protocol, through the real server: a secret room is seen
(listed, shown in WHOIS, its members and modes) by its members and by server operators, and
by no one else — IRC LIST, NAMES and WHOIS, line chat /rooms, /who and /whois, XMPP service
discovery of the room service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.matrix.clients import MUC, XmppPeer, local, token
from tests.ops.helpers import OPER_PASSWORD, OpsServer, chat, chat_as, join, operators_toml
from tests.support.server import LineClient

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PASSWORD = "secret-rooms-pw"
NS_ITEMS = "http://jabber.org/protocol/disco#items"


class Irc(LineClient):
    """A raw IRC client, registered on construction."""

    def __init__(self, port: int, nick: str) -> None:
        super().__init__(port)
        self.nick = nick
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.expect(f" 001 {nick} ")
        self.expect(lambda line: " 376 " in line or " 422 " in line)

    def rooms(self) -> set[str]:
        """The channels LIST shows."""
        self.send("LIST")
        shown = set()
        while True:
            line = self.read_line()
            if f" 323 {self.nick} " in line:
                return shown
            if f" 322 {self.nick} " in line:
                shown.add(line.split()[3])

    def whois_rooms(self, nick: str) -> list[str]:
        self.send(f"WHOIS {nick}")
        rooms: list[str] = []
        while True:
            line = self.read_line()
            if f" 318 {self.nick} " in line:
                return rooms
            if f" 319 {self.nick} " in line:
                rooms += line.split(" :", 1)[1].split()

    def names(self, channel: str) -> list[str]:
        self.send(f"NAMES {channel}")
        shown: list[str] = []
        while True:
            line = self.read_line()
            if f" 366 {self.nick} " in line:
                return shown
            if f" 353 {self.nick} " in line:
                shown += line.split(" :", 1)[1].split()


def line_rooms(client: LineClient) -> set[str]:
    """The rooms /rooms shows (text mode)."""
    client.send("/rooms")
    head = client.expect(lambda line: line.startswith("*** ") and " room" in line)
    if "no rooms" in head:
        return set()
    count = int(head.split()[1])
    return {client.read_line().split()[1] for _ in range(count)}


def line_whois_rooms(client: LineClient, nick: str) -> list[str]:
    client.send(f"/whois {nick}")
    rooms: list[str] = []
    while True:
        line = client.read_line()
        if line == f"*** end of whois {nick}":
            return rooms
        if line.startswith(f"*** {nick} is in "):
            rooms += line.removeprefix(f"*** {nick} is in ").split()


def xmpp_rooms(peer: XmppPeer) -> set[str]:
    """The rooms the room service lists in disco#items."""
    tok = token()
    peer.raw(f"<iq type='get' id='{tok}' to='{MUC}'><query xmlns='{NS_ITEMS}'/></iq>")
    answer = peer.expect(lambda el: local(el) == "iq" and el.get("id") == tok)
    assert answer.get("type") == "result"
    return {item.get("jid", "").split("@")[0] for item in answer.iter(f"{{{NS_ITEMS}}}item")}


def test_secret_rooms_are_seen_by_members_and_server_operators_on_every_protocol(
    tmp_path: Path,
) -> None:
    server = OpsServer(tmp_path, protocols=("line", "irc", "xmpp"), extra=operators_toml()).start()
    peers: list = []
    try:
        irc_port, line_port, xmpp_port = (server.ports[p] for p in ("irc", "line", "xmpp"))
        for account in ("olive", "xena"):
            server.create_account(account, PASSWORD)
        owner = chat(line_port, "sam")
        peers.append(owner)
        join(owner, "plaza")
        join(owner, "hideout")
        owner.send("/mode hideout +secret")
        owner.expect("-!- sam sets mode +secret on #hideout")

        # Outsiders, one per protocol: the secret room is not there for them.
        ivan = Irc(irc_port, "ivan")
        lena = chat(line_port, "lena")
        xena = XmppPeer(xmpp_port, "xena", PASSWORD)
        peers += [ivan, lena, xena]
        assert ivan.rooms() == {"#plaza"}
        assert ivan.whois_rooms("sam") == ["@#plaza"]
        assert ivan.names("#hideout") == []
        assert line_rooms(lena) == {"#plaza"}
        assert line_whois_rooms(lena, "sam") == ["@#plaza"]
        lena.send("/who hideout")
        assert lena.read_line() == "!!! error: no such room: #hideout"
        assert xmpp_rooms(xena) == {"plaza"}

        # Members see it, on every protocol.
        ivan.send("JOIN #hideout")
        ivan.expect(" 366 ivan #hideout ")
        lena.send("/join hideout")
        lena.expect("*** now talking in #hideout")
        xena.join("hideout")
        xena.expect(lambda el: local(el) == "presence" and el.get("from", "").endswith("/xena"))
        assert ivan.rooms() == {"#plaza", "#hideout"}
        assert line_rooms(lena) == {"#plaza", "#hideout"}
        assert xmpp_rooms(xena) == {"plaza", "hideout"}

        # Server operators who are not members see it too; the same user before it is one
        # does not.  olive is one user on line chat and XMPP (one account).
        olive = chat_as(line_port, "olive", PASSWORD)
        peers.append(olive)
        olive_xmpp = XmppPeer(xmpp_port, "olive", PASSWORD)
        peers.append(olive_xmpp)
        assert line_rooms(olive) == {"#plaza"}
        assert xmpp_rooms(olive_xmpp) == {"plaza"}
        olive.send(f"/oper admin {OPER_PASSWORD}")
        olive.expect("*** you are now a server operator")
        assert line_rooms(olive) == {"#plaza", "#hideout"}
        assert line_whois_rooms(olive, "sam") == ["@#plaza", "@#hideout"]
        olive.send("/who hideout")
        assert olive.read_line().startswith("*** members of #hideout (4): @sam ")
        assert xmpp_rooms(olive_xmpp) == {"plaza", "hideout"}

        opal = Irc(irc_port, "opal")
        peers.append(opal)
        assert opal.rooms() == {"#plaza"}
        opal.send(f"OPER admin {OPER_PASSWORD}")
        opal.expect(" 381 opal ")
        assert opal.rooms() == {"#plaza", "#hideout"}
        assert opal.whois_rooms("sam") == ["@#plaza", "@#hideout"]
        assert len(opal.names("#hideout")) == 4
    finally:
        for peer in peers:
            try:
                peer.close()
            except Exception:
                pass
        server.kill()
