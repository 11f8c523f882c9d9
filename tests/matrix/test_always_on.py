"""Always-on accounts across a restart of the client and of the server, on every protocol.

An always-on account stays in its rooms with its nick while none of its clients is connected
(shown away to the others); its next client, on any protocol, is put back in the rooms and
given what it missed; private messages meanwhile arrive as offline messages.  The server of
this module is its own (it is restarted).
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator

import pytest

from tests.matrix.clients import (
    MUC,
    NS_CLIENT,
    NS_DELAY,
    NS_MUC,
    IrcLine,
    LinePeer,
    XmppPeer,
    child,
    child_text,
    local,
    token,
)
from tests.matrix.conftest import PASSWORD, World
from tests.support.server import LineClient, ServerProcess

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HISTORY_CAPS = ("batch", "message-tags", "server-time")
NS_MUC_USER = "http://jabber.org/protocol/muc#user"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = ServerProcess(
        tmp_path_factory.mktemp("always-on"),
        protocols=("line", "irc", "xmpp"),
        overrides={
            "irc": {"flood_exempt": ["127.0.0.1"]},
            "line": {"flood_burst": 10000, "flood_rate": 10000.0},
            "chat": {"history_flush_interval": 0.2, "login_failure_burst": 50},
        },
    )
    server.start()
    made = World(server)
    try:
        yield made
    finally:
        made.close()
        server.kill()


def restart(world: World) -> None:
    world.close()
    world.peers.clear()
    world.server.restart()


def ns(peer, text: str) -> str:
    """Send NickServ a command; its first answer."""
    peer.send(f"PRIVMSG NickServ :{text}")
    return peer.expect(lambda m: m.command == "NOTICE" and m.source.startswith("NickServ")).last


def names(peer, room: str) -> set[str]:
    peer.send(f"NAMES #{room}")
    reply = peer.expect(lambda m: m.command == "353")
    return {n.lstrip("@+") for n in reply.last.split()}


def batches(peer, count: int) -> dict[str, list[IrcLine]]:
    """The next ``count`` chathistory batches, by target: {target: lines}."""
    got: dict[str, list[IrcLine]] = {}
    while len(got) < count:
        start = peer.expect(
            lambda m: m.command == "BATCH" and m.params[0].startswith("+") and len(m.params) > 2
        )
        assert start.params[1] == "chathistory", start.raw
        ref = start.params[0][1:]
        lines = got[start.params[2]] = []
        while True:
            m = peer.expect(lambda m: True)
            if m.command == "BATCH" and m.params[0] == "-" + ref:
                break
            assert m.tags.get("batch") == ref, m.raw
            lines.append(m)
    return got


def always_on_in(world: World, nick: str, room: str) -> LinePeer:
    """``nick`` registered, always-on, and in ``room``: its line client, still connected."""
    world.register(nick)
    a = world.line(nick, password=PASSWORD)
    a.cmd("set", setting="always-on", value="on")
    assert a.expect(lambda o: o.get("cmd") == "set")["always-on"] is True
    a.join(room)
    a.sync()
    return a


def test_irc_always_on_across_a_client_and_a_server_restart(world: World) -> None:
    alice, bob = world.nick("aoA"), world.nick("aoB")
    room = world.room("ao")
    world.register(alice)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    assert ns(a, "SET ALWAYS-ON").startswith("always-on is off")
    assert ns(a, "SET ALWAYS-ON ON").startswith("always-on is now on")
    a.join(room)
    a.sync()
    b = world.irc(bob, caps=("away-notify",))
    b.join(room)
    b.sync()
    a.quit("phone off")
    # The others see alice go away, not leave: she is still in the room, with her nick.
    away = b.expect(lambda m: m.command == "AWAY" and m.source.startswith(alice + "!"))
    assert "always-on" in away.last
    assert alice in names(b, room)
    guest = world.irc(world.nick("aoG"))
    guest.send(f"NICK {alice}")
    assert guest.expect(lambda m: m.command in ("433", "NICK")).command == "433"
    b.say(room, "said while alice was away")
    b.msg(alice, "a private word")
    b.sync()
    # She comes back: in her room again, with what she missed, and her private message.
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.expect(lambda m: m.command == "JOIN" and m.params[0] == f"#{room}")
    got = batches(a, 2)
    missed = got[f"#{room}"]
    assert [m.last for m in missed] == ["said while alice was away"]
    assert all("time" in m.tags for m in missed)
    assert [m.last for m in got[alice]] == ["a private word"]
    back = b.expect(lambda m: m.command == "AWAY" and m.source.startswith(alice + "!"))
    assert back.params == ()
    # Across a restart of the server: the membership and the time she left are kept.
    a.quit("laptop off")
    b.expect(lambda m: m.command == "AWAY" and m.source.startswith(alice + "!"))
    b.say(room, "before the restart")
    b.sync()
    restart(world)
    b = world.irc(bob, caps=("away-notify",))
    b.join(room)
    b.sync()
    assert alice in names(b, room)
    b.send(f"WHOIS {alice}")
    assert "always-on" in b.expect(lambda m: m.command == "301").last
    b.say(room, "after the restart")
    b.sync()
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.expect(lambda m: m.command == "JOIN" and m.params[0] == f"#{room}")
    missed = batches(a, 1)[f"#{room}"]
    assert [m.last for m in missed] == ["before the restart", "after the restart"]
    # Off again: her last client quitting takes her out of the room.
    assert ns(a, "SET ALWAYS-ON OFF").startswith("always-on is now off")
    a.quit("bye")
    b.expect(lambda m: m.command == "QUIT" and m.source.startswith(alice + "!"))
    assert alice not in names(b, room)


def test_line_always_on_rejoins_and_replays_across_restarts(world: World) -> None:
    alice, bob = world.nick("aoL"), world.nick("aoM")
    room = world.room("aol")
    a = always_on_in(world, alice, room)
    b = world.line(bob)
    b.join(room)
    b.sync()
    a.quit("gone")
    away = b.expect(lambda o: o.get("type") == "away" and o.get("from") == alice)
    assert "always-on" in away["text"]
    b.say(room, "line while away")
    b.msg(alice, "line pm")
    b.sync()
    # (The room itself is shown before the answer to /identify, as to a second client.)
    a = world.line(alice, password=PASSWORD)
    got = {}
    while len(got) < 2:
        o = a.expect(lambda o: o.get("type") in ("missed", "offline"))
        got[o["type"]] = o
    assert got["missed"]["room"] == room
    assert [m["text"] for m in got["missed"]["messages"]] == ["line while away"]
    assert [m["text"] for m in got["offline"]["messages"]] == ["line pm"]
    a.quit("gone again")
    b.say(room, "line before restart")
    b.sync()
    restart(world)
    # Text mode this time, under another nick until logged in: the missed block is
    # readable as such.
    a = world.line(alice + "t", json_mode=False)
    a.line(f"/identify {alice} {PASSWORD}")
    a.expect(lambda s: isinstance(s, str) and s.startswith(f"*** while you were away in #{room}"))
    line = a.expect(lambda s: isinstance(s, str) and "line before restart" in s)
    assert line.startswith("[")
    a.line("/set always-on")
    assert a.expect(lambda s: isinstance(s, str) and "always-on:" in s).endswith("on")


def returning_line(world: World, nick: str) -> list[object]:
    """Log in to always-on ``nick`` over line chat (JSON): everything shown, from the rooms
    (which come before the answer to the login) to the missed block and a ping after it."""
    client = LineClient(world.server.ports["line"])
    client.expect("*** Choose a nick:")
    client.send("/format json")
    client.send(json.dumps({"cmd": "identify", "nick": nick, "password": PASSWORD}))
    got: list[object] = []
    while not any(isinstance(o, dict) and o.get("type") == "missed" for o in got):
        line = client.read_line()
        got.append(json.loads(line) if line.startswith("{") else line)
    client.send(json.dumps({"cmd": "ping", "tag": "end"}))
    while (line := client.read_line()) and not (line.startswith("{") and '"end"' in line):
        got.append(json.loads(line) if line.startswith("{") else line)
    client.close()
    return got


def texts(shown: list[object]) -> list[str]:
    """Every message text shown: replayed ones and those in missed blocks."""
    out: list[str] = []
    for o in shown:
        if not isinstance(o, dict):
            continue
        if o.get("type") == "missed":
            out.extend(m["text"] for m in o["messages"])
        elif o.get("history") and "text" in o:
            out.append(o["text"])
    return out


def test_line_return_shows_each_missed_message_once(world: World) -> None:
    alice, bob = world.nick("aoR"), world.nick("aoS")
    room = world.room("aor")
    a = always_on_in(world, alice, room)
    b = world.line(bob)
    b.join(room)
    b.say(room, "seen live")
    a.expect(lambda o: o.get("text") == "seen live")
    a.quit("away")
    b.expect(lambda o: o.get("type") == "away" and o.get("from") == alice)
    for n in range(3):
        b.say(room, f"missed {n}")
    b.sync()
    shown = texts(returning_line(world, alice))
    # What she saw before leaving is the replay's; what came after, the missed block's: each
    # message once.
    assert shown.count("seen live") == 1, shown
    assert [shown.count(f"missed {n}") for n in range(3)] == [1, 1, 1], shown
    assert shown.index("seen live") < shown.index("missed 0")


def crash(world: World) -> None:
    """SIGKILL the server (nothing written at the end) and start it again."""
    world.server.kill()
    world.close()
    world.peers.clear()
    world.server.start()


def missed_texts(shown: list[object]) -> list[str]:
    return [
        m["text"]
        for o in shown
        if isinstance(o, dict) and o.get("type") == "missed"
        for m in o["messages"]
    ]


def test_after_a_crash_what_a_connected_always_on_user_had_not_been_given_is_missed(
    world: World,
) -> None:
    alice, bob = world.nick("aoK"), world.nick("aoJ")
    room = world.room("aok")
    always_on_in(world, alice, room)  # and still connected when the server dies
    b = world.line(bob)
    b.join(room)
    b.say(room, "just before the crash")
    b.sync()
    # Stored (the flush interval is 0.2 s), but the crash may have kept it from her client.
    time.sleep(0.6)
    crash(world)
    b = world.line(bob)
    b.join(room)
    b.say(room, "after the crash")
    b.sync()
    # Since her last checkpoint (her login, the checkpoint being a minute): both, once each.
    shown = returning_line(world, alice)
    assert missed_texts(shown) == ["just before the crash", "after the crash"]
    assert texts(shown).count("just before the crash") == 1


def test_checkpoints_of_connected_always_on_users_survive_a_crash(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = ServerProcess(
        tmp_path_factory.mktemp("checkpoint"),
        protocols=("line",),
        overrides={"chat": {"history_flush_interval": 0.1, "always_on_checkpoint": 0.3}},
    )
    server.start()
    world = World(server)
    try:
        alice, bob = world.nick("aoP"), world.nick("aoQ")
        room = world.room("aop")
        a = always_on_in(world, alice, room)
        b = world.line(bob)
        b.join(room)
        b.say(room, "given live")
        a.expect(lambda o: o.get("text") == "given live")
        # Checkpoints after it: she had been given it when the server died.
        time.sleep(1.2)
        crash(world)
        b = world.line(bob)
        b.join(room)
        b.say(room, "after the crash")
        b.sync()
        assert missed_texts(returning_line(world, alice)) == ["after the crash"]
    finally:
        world.close()
        server.kill()


def test_xmpp_client_of_an_always_on_account_is_shown_its_rooms_and_missed_messages(
    world: World,
) -> None:
    alice, bob = world.nick("aoX"), world.nick("aoY")
    room = world.room("aox")
    a = always_on_in(world, alice, room)
    a.quit("bye")
    b = world.irc(bob)
    b.join(room)
    b.say(room, "for the phone")
    b.msg(alice, "private for the phone")
    b.sync()
    restart(world)
    x = world.xmpp(alice)

    # The room appears as joined (self-presence, code 110), with its history; the private
    # message arrives with its delay stamp.
    def kind(e) -> str | None:
        if local(e) == "presence" and e.get("from", "").startswith(f"{room}@"):
            codes = {s.get("code") for s in (child(e, NS_MUC_USER, "x") or [])}
            return "own" if "110" in codes else None
        body = child_text(e, NS_CLIENT, "body")
        if e.get("type") == "groupchat" and body == "for the phone":
            return "said"
        return "pm" if body == "private for the phone" else None

    got: dict[str, object] = {}
    while len(got) < 3:
        e = x.expect(lambda e: kind(e) is not None)
        got[kind(e) or ""] = e
    own, said, pm = got["own"], got["said"], got["pm"]
    assert own.get("from", "").endswith("/" + alice)
    assert child(said, NS_DELAY, "delay") is not None
    assert child(pm, NS_DELAY, "delay") is not None
    # Its stream ends: alice stays in the room.
    x.close()
    b = world.irc(bob + "b")
    b.join(room)
    b.sync()
    assert alice in names(b, room)


NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def iq(peer, body: str, to: str = "localhost"):
    qid = token()
    peer.raw(f"<iq type='{body[0]}' id='{qid}' to='{to}'>{body[1]}</iq>")
    return peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid)


def test_xmpp_turns_always_on_on_with_an_ad_hoc_command(world: World) -> None:
    alice = world.nick("aoC")
    room = world.room("aoc")
    x = world.xmpp(alice)
    listed = iq(x, ("get", f"<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/>"))
    nodes = [i.get("node") for i in child(listed, NS_DISCO_ITEMS, "query")]
    assert "always-on" in nodes
    form = iq(x, ("set", f"<command xmlns='{NS_COMMANDS}' node='always-on' action='execute'/>"))
    command = child(form, NS_COMMANDS, "command")
    assert command.get("status") == "executing"
    field = next(f for f in child(command, NS_DATA, "x") if f.get("var") == "always-on")
    assert child_text(field, NS_DATA, "value") == "0"
    done = iq(
        x,
        (
            "set",
            f"<command xmlns='{NS_COMMANDS}' node='always-on' sessionid='{command.get('sessionid')}'>"
            f"<x xmlns='{NS_DATA}' type='submit'><field var='always-on'><value>1</value></field>"
            "</x></command>",
        ),
    )
    assert child(done, NS_COMMANDS, "command").get("status") == "completed"
    # An unknown command is not found.
    bad = iq(x, ("set", f"<command xmlns='{NS_COMMANDS}' node='nope' action='execute'/>"))
    assert bad.get("type") == "error"
    x.join(room)
    x.expect(lambda e: local(e) == "presence" and e.get("from", "").endswith("/" + alice))
    x.sync()
    x.close()
    i = world.irc(world.nick("aoD"), caps=("away-notify",))
    i.join(room)
    i.sync()
    assert alice in names(i, room)
    i.say(room, "are you there?")
    i.sync()
    x = world.xmpp(alice)
    said = x.expect(lambda e: child_text(e, NS_CLIENT, "body") == "are you there?")
    assert said.get("type") == "groupchat"


NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
# A little longer than the server waits for a client to show that it reads bookmarks.
SETTLE = 3.0


class Watched:
    """An XMPP client (slixmpp) whose every received stanza is kept, so that counts are
    whole: nothing read while waiting for an answer is dropped."""

    def __init__(self, world: World, account: str) -> None:
        self.peer = XmppPeer(world.server.ports["xmpp"], account, PASSWORD, presence=False)
        world.peers.append(self.peer)
        self.account = account
        self.seen: list = list(self.peer.pending)

    def until(self, test, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            el = self.peer._get(deadline - time.monotonic())
            self.seen.append(el)
            if test(el):
                return el

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.seen.append(self.peer.inbox.get(timeout=left))
            except queue.Empty:
                break

    def iq(self, kind: str, body: str, to: str | None = None):
        qid = token()
        where = f" to='{to}'" if to else ""
        self.peer.raw(f"<iq type='{kind}' id='{qid}'{where}>{body}</iq>")
        return self.until(lambda e: local(e) == "iq" and e.get("id") == qid)

    def presence(self) -> None:
        self.peer.do(self.peer.xmpp.send_presence)

    def bookmarks(self) -> dict[str, str | None]:
        """The XEP-0402 items: room JID -> autojoin."""
        got = self.iq("get", f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_BOOKMARKS}'/></pubsub>")
        assert got.get("type") == "result", got
        items = child(child(got, NS_PUBSUB, "pubsub"), NS_PUBSUB, "items")
        return {
            item.get("id"): child(item, NS_BOOKMARKS, "conference").get("autojoin")
            for item in items
        }

    def own_presences(self, room: str) -> int:
        """Self-presences (status 110) of ``room`` received so far: each is its whole state."""
        count = 0
        for e in self.seen:
            if local(e) == "presence" and e.get("from", "").startswith(f"{room}@"):
                codes = {s.get("code") for s in (child(e, NS_MUC_USER, "x") or [])}
                count += "110" in codes and e.get("type") != "unavailable"
        return count

    def archive(self, room: str) -> list[str]:
        """The bodies of the room's last 20 archived messages (room MAM)."""
        qid = token()
        got = self.iq(
            "set",
            f"<query xmlns='{NS_MAM}' queryid='{qid}'>"
            f"<set xmlns='{NS_RSM}'><max>20</max><before/></set></query>",
            to=f"{room}@{MUC}",
        )
        assert got.get("type") == "result", got
        bodies = []
        for e in self.seen:
            result = child(e, NS_MAM, "result")
            if result is not None and result.get("queryid") == qid:
                inner = child(child(result, NS_FORWARD, "forwarded"), NS_CLIENT, "message")
                bodies.append(child_text(inner, NS_CLIENT, "body"))
        return bodies


def autojoining_client(world: World, account: str, *, bookmarks_first: bool) -> Watched:
    """An XMPP client that rejoins its autojoin bookmarks, as Conversations, Gajim and Dino
    do: it reads them before or just after its first presence and joins each room."""
    x = Watched(world, account)
    if bookmarks_first:
        marks = x.bookmarks()
        x.presence()
    else:
        x.presence()
        marks = x.bookmarks()
    for jid, autojoin in marks.items():
        if autojoin in ("true", "1"):
            x.peer.raw(
                f"<presence to='{jid}/{account}'><x xmlns='{NS_MUC}'>"
                "<history maxstanzas='0'/></x></presence>"
            )
    x.drain(SETTLE)
    return x


def test_xmpp_always_on_rooms_are_autojoin_bookmarks_joined_once(world: World) -> None:
    alice, bob = world.nick("aoB"), world.nick("aoV")
    room = world.room("aob")
    jid = f"{room}@{MUC}"
    # Always-on and the room from line chat: the room becomes an autojoin bookmark.
    a = always_on_in(world, alice, room)
    a.quit("gone")
    b = world.irc(bob)
    b.join(room)
    b.say(room, "while the phone slept")
    b.sync()

    # A client that reads its bookmarks first, then comes online and joins: the room's
    # state once (the server leaves the room to it), what it missed through MAM.
    x = autojoining_client(world, alice, bookmarks_first=True)
    assert x.bookmarks() == {jid: "true"}
    assert x.own_presences(room) == 1
    assert "while the phone slept" in x.archive(room)
    # A client restart; this one comes online before it reads its bookmarks.
    x.peer.close()
    b.say(room, "between two sessions")
    b.sync()
    assert alice in names(b, room)
    x = autojoining_client(world, alice, bookmarks_first=False)
    assert x.own_presences(room) == 1
    assert "between two sessions" in x.archive(room)
    # A server restart: the bookmark and the membership are still there.
    x.peer.close()
    restart(world)
    b = world.irc(bob)
    b.join(room)
    b.say(room, "after the restart")
    b.sync()
    x = autojoining_client(world, alice, bookmarks_first=True)
    assert x.own_presences(room) == 1
    assert "after the restart" in x.archive(room)
    # Leaving the room while always-on takes it out of the bookmarks.
    x.peer.part(room)
    x.until(lambda e: local(e) == "presence" and e.get("type") == "unavailable")
    deadline = time.monotonic() + 5
    while x.bookmarks() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert x.bookmarks() == {}
    assert alice not in names(b, room)
    # A bookmark the user named is the user's: joining sets its autojoin, leaving clears it,
    # and its name stays.
    named = world.room("aobn")
    x.iq(
        "set",
        f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{NS_BOOKMARKS}'><item id='{named}@{MUC}'>"
        f"<conference xmlns='{NS_BOOKMARKS}' name='Named' autojoin='false'/>"
        "</item></publish></pubsub>",
    )
    x.peer.join(named)
    x.until(lambda e: local(e) == "presence" and e.get("from", "").startswith(f"{named}@"))

    def named_autojoin(wanted: str) -> None:
        deadline = time.monotonic() + 5
        while x.bookmarks().get(f"{named}@{MUC}") != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert x.bookmarks() == {f"{named}@{MUC}": wanted}

    named_autojoin("true")
    x.peer.part(named)
    named_autojoin("false")


def test_xmpp_client_that_reads_no_bookmarks_is_shown_bookmarked_rooms_once(
    world: World,
) -> None:
    alice, bob = world.nick("aoN"), world.nick("aoW")
    room = world.room("aon")
    a = always_on_in(world, alice, room)
    a.quit("gone")
    b = world.irc(bob)
    b.join(room)
    b.say(room, "for a plain client")
    b.sync()
    # It never asks for its bookmarks: the server shows it the room, once.
    x = Watched(world, alice)
    x.presence()
    x.drain(SETTLE)
    assert x.own_presences(room) == 1
    said = [e for e in x.seen if child_text(e, NS_CLIENT, "body") == "for a plain client"]
    assert len(said) == 1 and said[0].get("type") == "groupchat"
