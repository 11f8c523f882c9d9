"""The real server with real clients: slixmpp (XEP-0045 plugin), a line-chat user (JSON mode)
and a raw IRC client share one room and see each other's messages and events.

slixmpp runs on an asyncio loop in a thread of its own; each call below waits for its result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN, WAIT, SlixmppClient

pytestmark = pytest.mark.timeout(60)

MUC = f"conference.{DOMAIN}"
ROOM = f"dev@{MUC}"
PASSWORD = "correct horse"


def create_account(server: ServerProcess, name: str) -> None:
    server.create_account(name, PASSWORD)


class XmppUser(SlixmppClient):
    """A slixmpp client logged in and available; the room events it receives are queued."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(
            port,
            f"{name}@{DOMAIN}/test",
            PASSWORD,
            plugins=("xep_0030", "xep_0045", "xep_0199", "xep_0203", "xep_0359"),
            events=("groupchat_message", "groupchat_subject", "groupchat_presence"),
        )
        assert self.logged_in, f"{self.jid} could not log in"
        self.do(self.xmpp.send_presence)

    def join(self, room: str, nick: str, **history: Any) -> tuple[Any, Any, list, list]:
        from slixmpp import JID

        return self.call(self.muc.join_muc_wait(JID(room), nick, timeout=WAIT, **history))

    def say(self, text: str) -> None:
        self.do(self.xmpp.send_message, mto=ROOM, mbody=text, mtype="groupchat")


class LineUser:
    """A line-chat client in JSON mode."""

    def __init__(self, port: int, nick: str) -> None:
        self.client = LineClient(port)
        self.client.expect("Choose a nick")
        self.client.send(nick)
        self.client.send("/format json")
        self.client.expect(lambda line: line.startswith("{"))

    def cmd(self, **fields: Any) -> None:
        self.client.send(json.dumps(fields))

    def expect(self, **fields: Any) -> dict[str, Any]:
        def test(line: str) -> bool:
            if not line.startswith("{"):
                return False
            obj = json.loads(line)
            return all(obj.get(k) == v for k, v in fields.items())

        return json.loads(self.client.expect(test))


class IrcUser:
    def __init__(self, port: int, nick: str) -> None:
        self.client = LineClient(port)
        self.client.send(f"NICK {nick}")
        self.client.send(f"USER {nick} 0 * :{nick}")
        self.client.expect(lambda line: f" 001 {nick} " in line)

    def send(self, line: str) -> None:
        self.client.send(line)

    def expect(self, text: str) -> str:
        return self.client.expect(text)


@pytest.fixture
def world(make_server: Callable[..., ServerProcess]) -> Iterator[dict[str, Any]]:
    server = make_server(protocols=("line", "irc", "xmpp"))
    made: dict[str, Any] = {"server": server}
    try:
        create_account(server, "alice")
        yield made
    finally:
        for name in ("alice", "line", "irc"):
            user = made.get(name)
            if isinstance(user, XmppUser):
                user.close()
            elif user is not None:
                user.client.close()


def presence_codes(pres: Any) -> set[str]:
    return {str(code) for code in pres["muc"]["status_codes"]}


def test_a_room_shared_by_xmpp_line_and_irc(world: dict[str, Any]) -> None:
    server = world["server"]
    line = world["line"] = LineUser(server.ports["line"], "lina")
    line.cmd(cmd="join", room="dev")
    line.expect(type="join", room="dev", **{"from": "lina"})
    line.cmd(cmd="say", room="dev", text="said before")
    line.expect(type="ok", cmd="say")
    irc = world["irc"] = IrcUser(server.ports["irc"], "ircbob")
    irc.send("JOIN #dev")
    irc.expect(" 366 ")
    line.expect(type="join", **{"from": "ircbob"})

    alice = world["alice"] = XmppUser(server.ports["xmpp"], "alice")
    me, subject, occupants, history = alice.join(ROOM, "alice", maxstanzas=5)
    assert me["from"] == f"{ROOM}/alice" and "110" in presence_codes(me)
    assert {str(p["from"].resource) for p in occupants} >= {"lina", "ircbob"}
    assert not subject["subject"]
    assert [m["body"] for m in history] == ["said before"]
    stamp = history[0]["delay"]["stamp"]
    assert isinstance(stamp, datetime) and abs(stamp.timestamp() - time.time()) < 60
    line.expect(type="join", room="dev", **{"from": "alice"})
    irc.expect(":alice!")

    # XMPP -> line and IRC.
    alice.say("hello from xmpp")
    echo = alice.expect_event("groupchat_message", lambda m: m["body"] == "hello from xmpp")
    assert echo["from"] == f"{ROOM}/alice"
    line.expect(type="message", room="dev", text="hello from xmpp", **{"from": "alice"})
    irc.expect("PRIVMSG #dev :hello from xmpp")

    # A private message to an occupant reaches that user wherever it is.
    alice.do(alice.xmpp.send_message, mto=f"{ROOM}/lina", mbody="psst", mtype="chat")
    line.expect(type="message", to="lina", text="psst", **{"from": "alice"})

    # IRC and line -> XMPP.
    irc.send("PRIVMSG #dev :hello from irc")
    got = alice.expect_event("groupchat_message", lambda m: m["body"] == "hello from irc")
    assert got["from"] == f"{ROOM}/ircbob"
    irc.send("PRIVMSG #dev :\x01ACTION waves\x01")
    alice.expect_event("groupchat_message", lambda m: m["body"] == "/me waves")
    line.cmd(cmd="say", room="dev", text="hello from line")
    got = alice.expect_event("groupchat_message", lambda m: m["body"] == "hello from line")
    assert got["from"] == f"{ROOM}/lina"

    # Topic, kick and part from the others, seen in XMPP form.
    line.cmd(cmd="topic", room="dev", text="Release Friday")
    got = alice.expect_event("groupchat_subject", lambda m: m["subject"] == "Release Friday")
    assert got["from"] == f"{ROOM}/lina"
    line.cmd(cmd="kick", room="dev", nick="ircbob", reason="testing")
    kicked = alice.expect_event(
        "groupchat_presence",
        lambda p: p["from"].resource == "ircbob" and p["type"] == "unavailable",
    )
    assert "307" in presence_codes(kicked)
    irc.send("JOIN #dev")
    alice.expect_event(
        "groupchat_presence",
        lambda p: p["from"].resource == "ircbob" and p["type"] != "unavailable",
    )
    irc.send("PART #dev :see you")
    gone = alice.expect_event(
        "groupchat_presence",
        lambda p: p["from"].resource == "ircbob" and p["type"] == "unavailable",
    )
    assert gone["status"] == "see you"

    # Leaving from XMPP is a part for the others.
    alice.do(alice.muc.leave_muc, ROOM, "alice", "bye")
    line.expect(type="part", room="dev", **{"from": "alice"})


def test_an_xmpp_moderator_kicks_and_bans_others(world: dict[str, Any]) -> None:
    server = world["server"]
    alice = world["alice"] = XmppUser(server.ports["xmpp"], "alice")
    me, _subject, _occupants, _history = alice.join(ROOM, "alice")
    assert {"110", "201"} <= presence_codes(me)
    line = world["line"] = LineUser(server.ports["line"], "lina")
    line.cmd(cmd="join", room="dev")
    alice.expect_event("groupchat_presence", lambda p: p["from"].resource == "lina")
    alice.do(alice.muc.set_subject, ROOM, "House rules")
    line.expect(type="topic", room="dev", text="House rules", **{"from": "alice"})
    alice.call(alice.muc.set_role(ROOM, "lina", "none", reason="behave"))
    line.expect(type="kick", room="dev", target="lina", reason="behave")
    irc = world["irc"] = IrcUser(server.ports["irc"], "ircbob")
    irc.send("JOIN #dev")
    alice.expect_event("groupchat_presence", lambda p: p["from"].resource == "ircbob")
    alice.call(alice.muc.set_affiliation(ROOM, "outcast", jid="ircbob@localhost"))
    irc.expect("KICK #dev ircbob")
    irc.send("JOIN #dev")
    irc.expect(" 474 ")
