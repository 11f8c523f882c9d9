"""The real server with real clients: slixmpp (XEP-0045 plugin), a line-chat user (JSON mode)
and a raw IRC client share one room and see each other's messages and events.

slixmpp runs on an asyncio loop in a thread of its own; each call below waits for its result.
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

DOMAIN = "localhost"
MUC = f"conference.{DOMAIN}"
ROOM = f"dev@{MUC}"
PASSWORD = "correct horse"
WAIT = 5.0


def create_account(server: ServerProcess, name: str) -> None:
    server.create_account(name, PASSWORD)


class XmppUser:
    """A slixmpp client logged in and ready; what it receives is queued on ``stanzas``."""

    def __init__(self, port: int, name: str) -> None:
        import slixmpp

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stanzas: queue.Queue[Any] = queue.Queue()
        self.jid = f"{name}@{DOMAIN}"

        async def start() -> Any:
            xmpp = slixmpp.ClientXMPP(f"{self.jid}/test", PASSWORD)
            xmpp.loop = self.loop
            for plugin in ("xep_0030", "xep_0045", "xep_0199", "xep_0203", "xep_0359"):
                xmpp.register_plugin(plugin)
            xmpp.enable_direct_tls = False
            # The server's certificate is self-signed on first start.
            xmpp.ssl_context.check_hostname = False
            xmpp.ssl_context.verify_mode = ssl.CERT_NONE
            for event in ("groupchat_message", "groupchat_subject", "groupchat_presence"):
                xmpp.add_event_handler(event, lambda st, e=event: self.stanzas.put((e, st)))
            started = asyncio.ensure_future(xmpp.wait_until("session_start", WAIT))
            xmpp.connect("127.0.0.1", port)
            await started
            xmpp.send_presence()
            return xmpp

        self.xmpp = self.call(start())

    def call(self, coro: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a plain slixmpp call on its loop's thread."""

        async def run() -> Any:
            return func(*args, **kwargs)

        return self.call(run())

    @property
    def muc(self) -> Any:
        return self.xmpp.plugin["xep_0045"]

    def join(self, room: str, nick: str, **history: Any) -> tuple[Any, Any, list, list]:
        from slixmpp import JID

        return self.call(self.muc.join_muc_wait(JID(room), nick, timeout=WAIT, **history))

    def say(self, text: str) -> None:
        self.do(self.xmpp.send_message, mto=ROOM, mbody=text, mtype="groupchat")

    def expect(self, kind: str, test: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                event, stanza = self.stanzas.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {kind} stanza matched") from None
            if event == kind and test(stanza):
                return stanza

    def close(self) -> None:
        async def stop() -> None:
            try:
                await asyncio.wait_for(self.xmpp.disconnect(wait=1), 2)
            except Exception:
                pass
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(stop(), timeout=4)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(3)
            self.loop.close()


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
    echo = alice.expect("groupchat_message", lambda m: m["body"] == "hello from xmpp")
    assert echo["from"] == f"{ROOM}/alice"
    line.expect(type="message", room="dev", text="hello from xmpp", **{"from": "alice"})
    irc.expect("PRIVMSG #dev :hello from xmpp")

    # A private message to an occupant reaches that user wherever it is.
    alice.do(alice.xmpp.send_message, mto=f"{ROOM}/lina", mbody="psst", mtype="chat")
    line.expect(type="message", to="lina", text="psst", **{"from": "alice"})

    # IRC and line -> XMPP.
    irc.send("PRIVMSG #dev :hello from irc")
    got = alice.expect("groupchat_message", lambda m: m["body"] == "hello from irc")
    assert got["from"] == f"{ROOM}/ircbob"
    irc.send("PRIVMSG #dev :\x01ACTION waves\x01")
    alice.expect("groupchat_message", lambda m: m["body"] == "/me waves")
    line.cmd(cmd="say", room="dev", text="hello from line")
    got = alice.expect("groupchat_message", lambda m: m["body"] == "hello from line")
    assert got["from"] == f"{ROOM}/lina"

    # Topic, kick and part from the others, seen in XMPP form.
    line.cmd(cmd="topic", room="dev", text="Release Friday")
    got = alice.expect("groupchat_subject", lambda m: m["subject"] == "Release Friday")
    assert got["from"] == f"{ROOM}/lina"
    line.cmd(cmd="kick", room="dev", nick="ircbob", reason="testing")
    kicked = alice.expect(
        "groupchat_presence",
        lambda p: p["from"].resource == "ircbob" and p["type"] == "unavailable",
    )
    assert "307" in presence_codes(kicked)
    irc.send("JOIN #dev")
    alice.expect(
        "groupchat_presence",
        lambda p: p["from"].resource == "ircbob" and p["type"] != "unavailable",
    )
    irc.send("PART #dev :see you")
    gone = alice.expect(
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
    alice.expect("groupchat_presence", lambda p: p["from"].resource == "lina")
    alice.do(alice.muc.set_subject, ROOM, "House rules")
    line.expect(type="topic", room="dev", text="House rules", **{"from": "alice"})
    alice.call(alice.muc.set_role(ROOM, "lina", "none", reason="behave"))
    line.expect(type="kick", room="dev", target="lina", reason="behave")
    irc = world["irc"] = IrcUser(server.ports["irc"], "ircbob")
    irc.send("JOIN #dev")
    alice.expect("groupchat_presence", lambda p: p["from"].resource == "ircbob")
    alice.call(alice.muc.set_affiliation(ROOM, "outcast", jid="ircbob@localhost"))
    irc.expect("KICK #dev ircbob")
    irc.send("JOIN #dev")
    irc.expect(" 474 ")
