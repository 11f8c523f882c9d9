"""One history: what is said on any protocol is in every protocol's history, with the same
sender, the same time and the same id everywhere.

Live, a message's id is the IRC ``msgid`` tag, the XMPP ``stanza-id`` the room stamps on it
and the line-chat JSON ``id``: one core id.  Afterwards it comes back from IRC CHATHISTORY,
from the replay IRC clients without CHATHISTORY get on joining, from the XMPP room's
discussion history (with XEP-0203 delay stamps) and from line chat's replay on joining and
``/history``, each with that id and time.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.matrix.clients import (
    NS_CLIENT,
    NS_DELAY,
    NS_MUC,
    NS_SID,
    IrcLine,
    Peer,
    child,
    child_text,
    local,
    room_jid,
    status_codes,
)
from tests.matrix.conftest import World
from tests.matrix.runner import enter, leave

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

TAG_CAPS = ("message-tags", "server-time")


def irc_time(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def irc_body(m: IrcLine) -> tuple[str, str]:
    """(kind, text) of a PRIVMSG/NOTICE line."""
    if m.command == "NOTICE":
        return "notice", m.last
    if m.last.startswith("\x01ACTION ") and m.last.endswith("\x01"):
        return "action", m.last[8:-1]
    return "privmsg", m.last


def xmpp_body(el: ET.Element) -> tuple[str, str]:
    body = child_text(el, NS_CLIENT, "body") or ""
    return ("action", body[4:]) if body.startswith("/me ") else ("privmsg", body)


@pytest.fixture(scope="module")
def said(world: World) -> dict[str, Any]:
    """A room where a user of each protocol said two things, watched live by a user of each
    protocol: what each message is (sender, kind, text) with its id and time as each saw it."""
    room = world.room("hist")
    senders: dict[str, Peer] = {
        "irc": world.irc(world.nick("hsirc")),
        "line": world.line(world.nick("hsline")),
        "xmpp": world.xmpp(world.nick("hsxmpp")),
    }
    watch_irc = world.irc(world.nick("hwirc"), caps=TAG_CAPS)
    watch_line = world.line(world.nick("hwline"))
    watch_xmpp = world.xmpp(world.nick("hwxmpp"))
    enter(room, watch_line, watch_irc, watch_xmpp, *senders.values())
    script = [
        ("irc", "privmsg", "from irc <&> 🙂"),
        ("line", "privmsg", "from line chat ✓"),
        ("xmpp", "privmsg", "from xmpp 'quoted'"),
        ("irc", "action", "waves from irc"),
        ("line", "notice", "a notice from line chat"),
        ("xmpp", "action", "waves from xmpp"),
    ]
    messages: list[dict[str, Any]] = []
    views: list[tuple[Any, ...]] = []
    for protocol, kind, text in script:
        sender = senders[protocol]
        {"privmsg": sender.say, "action": sender.act, "notice": sender.notice}[kind](room, text)
        sender.sync()
        live_irc = [
            m
            for m in watch_irc.sync()
            if isinstance(m, IrcLine) and m.command in ("PRIVMSG", "NOTICE")
        ]
        live_line = [o for o in watch_line.sync() if o.get("type") == "message"]
        live_xmpp = [
            el
            for el in watch_xmpp.sync()
            if local(el) == "message" and el.get("type") == "groupchat"
        ]
        views.append((sender.nick, kind, text, live_irc, live_line, live_xmpp))
        (o,) = live_line or [{"id": None, "ts": 0.0}]
        messages.append(
            {"id": o["id"], "ts": o["ts"], "from": sender.nick, "kind": kind, "text": text}
        )
    for peer in senders.values():
        peer.sync()
    # No wait for the batched database write: history queries write pending messages first.
    return {"room": room, "messages": messages, "views": views}


def test_irc_chathistory_has_every_protocols_messages(world: World, said: dict[str, Any]) -> None:
    room = said["room"]
    irc = world.irc(world.nick("hcirc"), caps=("draft/chathistory", "batch", *TAG_CAPS))
    enter(room, irc)
    irc.send(f"CHATHISTORY LATEST #{room} * 20")
    irc.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    lines = []
    while True:
        m = irc.expect(lambda m: m.command in ("PRIVMSG", "NOTICE", "BATCH"))
        if m.command == "BATCH":
            break
        lines.append(m)
    got = [
        {
            "id": m.tags["msgid"],
            "from": m.nick,
            "kind": irc_body(m)[0],
            "text": irc_body(m)[1],
            "ts": irc_time(m.tags["time"]),
        }
        for m in lines
    ]
    assert_same(got, said["messages"])
    leave(room, irc)


def test_irc_replay_on_join_without_chathistory(world: World, said: dict[str, Any]) -> None:
    room = said["room"]
    irc = world.irc(world.nick("hrirc"), caps=("batch", *TAG_CAPS))
    irc.join(room)
    batch = irc.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    assert batch.params[1] == "chathistory"
    lines = []
    while True:
        m = irc.expect(lambda m: m.command in ("PRIVMSG", "NOTICE", "BATCH"))
        if m.command == "BATCH":
            break
        assert m.tags["batch"] == batch.params[0][1:]
        lines.append(m)
    got = [
        {
            "id": m.tags["msgid"],
            "from": m.nick,
            "kind": irc_body(m)[0],
            "text": irc_body(m)[1],
            "ts": irc_time(m.tags["time"]),
        }
        for m in lines
    ]
    assert_same(got, said["messages"])
    leave(room, irc)


def test_xmpp_room_history_has_every_protocols_messages(world: World, said: dict[str, Any]) -> None:
    room = said["room"]
    xmpp = world.xmpp(world.nick("hxmpp"))
    xmpp.raw(
        f"<presence to='{room_jid(room)}/{xmpp.nick}'><x xmlns='{NS_MUC}'><history maxstanzas='20'/></x></presence>"
    )
    xmpp.expect(lambda el: local(el) == "presence" and "110" in status_codes(el))
    history = []
    while True:
        el = xmpp.expect(lambda el: local(el) == "message")
        if child(el, NS_CLIENT, "subject") is not None:
            break
        history.append(el)
    got = []
    for el in history:
        delay = child(el, NS_DELAY, "delay")
        assert delay is not None and delay.get("from") == room_jid(room)
        stamp = datetime.strptime(delay.get("stamp", ""), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC
        )
        kind, text = xmpp_body(el)
        sid = child(el, NS_SID, "stanza-id")
        assert sid is not None
        got.append(
            {
                "id": sid.get("id"),
                "from": el.get("from", "").rpartition("/")[2],
                "kind": kind,
                "text": text,
                "ts": stamp.timestamp(),
            }
        )
    # XMPP has no notices: the notice is a plain message there.
    wanted = [
        dict(m, kind="privmsg" if m["kind"] == "notice" else m["kind"]) for m in said["messages"]
    ]
    assert_same(got, wanted)
    leave(room, xmpp)


def test_line_chat_history_has_every_protocols_messages(world: World, said: dict[str, Any]) -> None:
    room = said["room"]
    line = world.line(world.nick("hline"))
    line.join(room)
    replay = []
    line.expect(lambda o: o.get("type") == "room")
    for _ in said["messages"]:
        replay.append(line.expect(lambda o: o.get("type") == "message"))
    assert all(o["history"] for o in replay)
    assert_same([pick(o) for o in replay], said["messages"])
    line.cmd("history", room=room, count=20)
    answer = line.expect(lambda o: o.get("cmd") == "history")
    assert_same([pick(o) for o in answer["messages"]], said["messages"])

    text = world.line(world.nick("htext"), json_mode=False)
    text.join(room)
    text.sync()
    text.line(f"/history #{room}")
    text.expect(lambda s: s.startswith(f"*** history of #{room}"))
    shown = []
    while True:
        s = text.expect(lambda s: True)
        if s.startswith("*** end of history"):
            break
        shown.append(s)
    wanted = []
    for m in said["messages"]:
        clock = time.strftime("%H:%M", time.gmtime(m["ts"]))
        head = {
            "privmsg": f"<{m['from']}> ",
            "action": f"* {m['from']} ",
            "notice": f"-{m['from']}- ",
        }[m["kind"]]
        wanted.append(f"[#{room}] [{clock}] {head}{m['text']}")
    assert shown == wanted
    leave(room, line, text)


def pick(o: dict[str, Any]) -> dict[str, Any]:
    return {k: o[k] for k in ("id", "from", "kind", "text", "ts")}


def assert_same(got: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> None:
    """The same messages in the same order: ids, senders, kinds and texts exactly, times to
    the millisecond that IRC and XMPP timestamps carry."""
    strip = [{k: v for k, v in m.items() if k != "ts"} for m in got]
    assert strip == [{k: v for k, v in m.items() if k != "ts"} for m in wanted]
    for g, w in zip(got, wanted, strict=True):
        assert abs(g["ts"] - w["ts"]) < 0.002, (g, w)


def test_live_messages_carry_one_id_everywhere(said: dict[str, Any]) -> None:
    """Live, each message reaches a user of each protocol once, with the same id (IRC
    msgid, XMPP stanza-id, line JSON id) and the same time (IRC server-time, JSON ts)."""
    room = said["room"]
    for nick, kind, text, live_irc, live_line, live_xmpp in said["views"]:
        assert len(live_irc) == len(live_line) == len(live_xmpp) == 1, (
            live_irc,
            live_line,
            live_xmpp,
        )
        (m,), (o,), (el,) = live_irc, live_line, live_xmpp
        sid = child(el, NS_SID, "stanza-id")
        assert sid is not None and sid.get("by") == room_jid(room)
        assert m.tags["msgid"] == o["id"] == sid.get("id"), (m.tags, o, ET.tostring(el))
        assert abs(irc_time(m.tags["time"]) - o["ts"]) < 0.002
        assert irc_body(m) == (kind, text) == (o["kind"], o["text"])
        assert m.nick == o["from"] == nick
        assert el.get("from") == f"{room_jid(room)}/{nick}"
        assert xmpp_body(el) == ("privmsg" if kind == "notice" else kind, text)
