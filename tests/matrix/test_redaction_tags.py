"""Redaction, typing notices and reactions across protocols, through the real server.

* IRC ``REDACT`` (``draft/message-redaction``) removes a message from history and reaches IRC
  clients with the capability as ``REDACT``, XMPP occupants as a XEP-0424 retraction (or a
  XEP-0425 moderation when someone else removed it) and line chat as a ``redact`` event; an
  XMPP retraction or moderation reaches IRC as ``REDACT``.
* IRC ``TAGMSG`` with ``+typing`` is an XEP-0085 chat state for XMPP users and the other way
  round; ``+draft/react`` with ``+draft/reply`` is an XEP-0444 reaction naming the same id.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.matrix.clients import (
    NS_CLIENT,
    NS_SID,
    IrcLine,
    IrcPeer,
    LinePeer,
    XmppPeer,
    child,
    child_text,
    local,
    room_jid,
)
from tests.matrix.conftest import PASSWORD, World
from tests.matrix.runner import enter
from tests.support.xmpp_client import DOMAIN

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

NS_RETRACT = "urn:xmpp:message-retract:1"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_STATES = "http://jabber.org/protocol/chatstates"
NS_REACTIONS = "urn:xmpp:reactions:0"
NS_REPLY = "urn:xmpp:reply:0"
NS_CORRECT = "urn:xmpp:message-correct:0"
REDACT_CAPS = ("message-tags", "echo-message", "server-time", "draft/message-redaction")
HISTORY_CAPS = (*REDACT_CAPS, "batch", "draft/chathistory")


class Cast:
    def __init__(self, world: World) -> None:
        self.room = world.room("redact")
        # The IRC operator (first in the room), a member without the capability, a member
        # with it, a line-chat member in JSON mode and an XMPP occupant.
        self.op = world.irc(world.nick("rop"), caps=HISTORY_CAPS)
        self.plain = world.irc(world.nick("rplain"))
        self.member = world.irc(world.nick("rmem"), caps=REDACT_CAPS)
        self.line = world.line(world.nick("rline"))
        self.xmpp = world.xmpp(world.nick("rxmpp"))
        enter(self.room, self.op)
        enter(self.room, self.plain, self.member, self.line, self.xmpp)
        for peer in self.everyone():
            peer.sync()

    def everyone(self) -> list[Any]:
        return [self.op, self.plain, self.member, self.line, self.xmpp]


@pytest.fixture(scope="module")
def cast(world: World) -> Iterator[Cast]:
    yield Cast(world)


def said(peer: IrcPeer, text: str) -> IrcLine:
    return peer.expect(lambda m: m.command == "PRIVMSG" and m.last == text)


def xmpp_said(peer: XmppPeer, text: str) -> ET.Element:
    return peer.expect(
        lambda el: local(el) == "message" and child_text(el, NS_CLIENT, "body") == text
    )


def stanza_id(el: ET.Element) -> str:
    sid = child(el, NS_SID, "stanza-id")
    assert sid is not None, ET.tostring(el)
    return sid.get("id") or ""


def redacts(peer: IrcPeer, msgid: str) -> IrcLine:
    return peer.expect(lambda m: m.command == "REDACT" and m.params[1:2] == (msgid,))


def retraction(el: ET.Element) -> ET.Element | None:
    return child(el, NS_RETRACT, "retract") if local(el) == "message" else None


def latest_history(peer: IrcPeer, room: str) -> list[str]:
    """The texts CHATHISTORY LATEST returns for the room."""
    peer.send(f"CHATHISTORY LATEST #{room} * 50")
    texts: list[str] = []
    start = peer.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    ref = start.params[0][1:]
    while True:
        m = peer.expect(lambda m: m.tags.get("batch") == ref or m.command == "BATCH")
        if m.command == "BATCH" and m.params[0] == f"-{ref}":
            return texts
        if m.command == "PRIVMSG":
            texts.append(m.last)


def test_an_irc_redaction_reaches_every_protocol_and_leaves_history(cast: Cast) -> None:
    cast.member.send(f"PRIVMSG #{cast.room} :buy cheap watches")
    msgid = said(cast.op, "buy cheap watches").tags["msgid"]
    assert stanza_id(xmpp_said(cast.xmpp, "buy cheap watches")) == msgid
    for peer in (cast.plain, cast.member, cast.line):
        peer.sync()
    assert "buy cheap watches" in latest_history(cast.op, cast.room)

    cast.op.send(f"REDACT #{cast.room} {msgid} :spam")
    mine = redacts(cast.op, msgid)
    assert mine.params == (f"#{cast.room}", msgid, "spam") and mine.nick == cast.op.nick
    theirs = redacts(cast.member, msgid)
    assert theirs.params == (f"#{cast.room}", msgid, "spam") and theirs.nick == cast.op.nick
    assert "msgid" in theirs.tags and theirs.tags["msgid"] != msgid
    # Without the capability: nothing (the specification forbids sending it).
    assert [m for m in cast.plain.sync() if m.command == "REDACT"] == []
    event = cast.line.expect(lambda o: o.get("type") == "redact")
    assert (event["id"], event["from"], event["sender"], event["room"], event["reason"]) == (
        msgid,
        cast.op.nick,
        cast.member.nick,
        cast.room,
        "spam",
    )
    # Someone else's message: a moderation (XEP-0425) from the room itself.
    el = cast.xmpp.expect(lambda el: retraction(el) is not None)
    retract = retraction(el)
    assert retract is not None and retract.get("id") == msgid
    assert el.get("from") == room_jid(cast.room)
    moderated = child(retract, NS_MODERATE, "moderated")
    assert moderated is not None
    assert moderated.get("by") == f"{room_jid(cast.room)}/{cast.op.nick}"
    assert child_text(retract, NS_RETRACT, "reason") == "spam"

    assert "buy cheap watches" not in latest_history(cast.op, cast.room)


def test_a_sender_redacts_its_own_message_as_a_retraction(cast: Cast) -> None:
    cast.member.send(f"PRIVMSG #{cast.room} :typo")
    msgid = said(cast.member, "typo").tags["msgid"]
    xmpp_said(cast.xmpp, "typo")
    cast.member.send(f"REDACT #{cast.room} {msgid}")
    assert redacts(cast.member, msgid).params == (f"#{cast.room}", msgid)
    assert redacts(cast.op, msgid).nick == cast.member.nick
    el = cast.xmpp.expect(lambda el: retraction(el) is not None)
    assert el.get("from") == f"{room_jid(cast.room)}/{cast.member.nick}"
    cast.line.expect(lambda o: o.get("type") == "redact" and o.get("id") == msgid)
    assert retraction(el).get("id") == msgid  # type: ignore[union-attr]
    # A fallback body for clients without XEP-0424.
    assert child_text(el, NS_CLIENT, "body")


def test_refusals_are_standard_replies(cast: Cast) -> None:
    cast.op.send(f"PRIVMSG #{cast.room} :mine alone")
    msgid = said(cast.member, "mine alone").tags["msgid"]
    cast.op.sync()
    cast.member.send(f"REDACT #{cast.room} {msgid}")
    fail = cast.member.expect(lambda m: m.command == "FAIL")
    assert fail.params[:4] == ("REDACT", "REDACT_FORBIDDEN", f"#{cast.room}", msgid)
    cast.member.send(f"REDACT #{cast.room} nosuchid")
    fail = cast.member.expect(lambda m: m.command == "FAIL")
    assert fail.params[:4] == ("REDACT", "UNKNOWN_MSGID", f"#{cast.room}", "nosuchid")
    cast.member.send(f"REDACT #nowhere-{cast.room} {msgid}")
    fail = cast.member.expect(lambda m: m.command == "FAIL")
    assert fail.params[:3] == ("REDACT", "INVALID_TARGET", f"#nowhere-{cast.room}")
    # Nothing was removed: the operator was told nothing and the message is still there.
    assert [m for m in cast.op.sync() if m.command == "REDACT"] == []
    assert "mine alone" in latest_history(cast.op, cast.room)


def test_an_xmpp_retraction_reaches_irc_and_line(cast: Cast) -> None:
    room = room_jid(cast.room)
    cast.xmpp.raw(
        f"<message to='{room}' type='groupchat' id='x-oops'><body>wrong window</body></message>"
    )
    msgid = said(cast.op, "wrong window").tags["msgid"]
    assert stanza_id(xmpp_said(cast.xmpp, "wrong window")) == msgid
    cast.xmpp.raw(
        f"<message to='{room}' type='groupchat' id='x-retract'>"
        f"<retract id='{msgid}' xmlns='{NS_RETRACT}'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_RETRACT}'/>"
        "<body>retracted</body><store xmlns='urn:xmpp:hints'/></message>"
    )
    got = redacts(cast.op, msgid)
    assert got.params == (f"#{cast.room}", msgid) and got.nick == cast.xmpp.nick
    assert cast.line.expect(lambda o: o.get("type") == "redact" and o.get("id") == msgid)
    # The occupant's own stanza is reflected (XEP-0424 §5).
    echo = cast.xmpp.expect(lambda el: retraction(el) is not None)
    assert echo.get("id") == "x-retract"
    assert "wrong window" not in latest_history(cast.op, cast.room)
    # The fallback body was no message of its own.
    assert [m for m in cast.op.sync() if m.command == "PRIVMSG"] == []


def test_an_xmpp_moderator_removes_an_irc_message(cast: Cast) -> None:
    cast.op.send(f"MODE #{cast.room} +o {cast.xmpp.nick}")
    cast.op.sync()
    cast.xmpp.sync()
    cast.plain.send(f"PRIVMSG #{cast.room} :flood flood")
    msgid = said(cast.op, "flood flood").tags["msgid"]
    cast.xmpp.raw(
        f"<iq type='set' id='mod1' to='{room_jid(cast.room)}'>"
        f"<moderate id='{msgid}' xmlns='{NS_MODERATE}'>"
        f"<retract xmlns='{NS_RETRACT}'/><reason>noise</reason></moderate></iq>"
    )
    result = cast.xmpp.expect(lambda el: local(el) == "iq" and el.get("id") == "mod1")
    assert result.get("type") == "result", ET.tostring(result)
    got = redacts(cast.op, msgid)
    assert got.params == (f"#{cast.room}", msgid, "noise") and got.nick == cast.xmpp.nick
    # A member who is not a moderator may not.
    cast.member.send(f"PRIVMSG #{cast.room} :keep me")
    other = said(cast.op, "keep me").tags["msgid"]
    cast.op.send(f"MODE #{cast.room} -o {cast.xmpp.nick}")
    cast.op.sync()
    cast.xmpp.sync()
    cast.xmpp.raw(
        f"<iq type='set' id='mod2' to='{room_jid(cast.room)}'>"
        f"<moderate id='{other}' xmlns='{NS_MODERATE}'><retract xmlns='{NS_RETRACT}'/>"
        "</moderate></iq>"
    )
    refused = cast.xmpp.expect(lambda el: local(el) == "iq" and el.get("id") == "mod2")
    assert refused.get("type") == "error"
    assert [m for m in cast.op.sync() if m.command == "REDACT"] == []


def test_private_redaction_between_irc_and_xmpp(world: World) -> None:
    irc_name, xmpp_name = world.nick("pirc"), world.nick("pxmpp")
    world.register(irc_name)
    irc = world.irc(irc_name, caps=REDACT_CAPS, sasl=(irc_name, PASSWORD))
    xmpp = world.xmpp(xmpp_name)
    irc.send(f"PRIVMSG {xmpp_name} :psst")
    msgid = said(irc, "psst").tags["msgid"]
    got = xmpp_said(xmpp, "psst")
    assert got.get("id") == msgid
    irc.send(f"REDACT {xmpp_name} {msgid}")
    assert redacts(irc, msgid).params == (xmpp_name, msgid)
    el = xmpp.expect(lambda el: retraction(el) is not None)
    assert retraction(el).get("id") == msgid  # type: ignore[union-attr]
    assert el.get("from") == f"{irc_name}@{DOMAIN}"

    # The other way: the XMPP sender retracts by the id it gave its message.
    xmpp.raw(f"<message to='{irc_name}@{DOMAIN}' type='chat' id='c-1'><body>sorry</body></message>")
    theirs = said(irc, "sorry").tags["msgid"]
    xmpp.raw(
        f"<message to='{irc_name}@{DOMAIN}' type='chat' id='c-2'>"
        f"<retract id='c-1' xmlns='{NS_RETRACT}'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_RETRACT}'/><body>retracted</body>"
        "</message>"
    )
    got_redact = redacts(irc, theirs)
    assert got_redact.nick == xmpp_name and got_redact.params == (irc_name, theirs)
    # Someone else's private message is not the IRC user's to remove.
    irc.send(f"REDACT {xmpp_name} {theirs}")
    fail = irc.expect(lambda m: m.command == "FAIL")
    assert fail.params[1] in ("REDACT_FORBIDDEN", "UNKNOWN_MSGID")


def test_typing_notices_between_irc_and_xmpp(cast: Cast) -> None:
    room = room_jid(cast.room)
    for peer in cast.everyone():
        peer.sync()
    cast.member.send(f"@+typing=active TAGMSG #{cast.room}")
    el = cast.xmpp.expect(lambda el: child(el, NS_STATES, "composing") is not None)
    assert el.get("from") == f"{room}/{cast.member.nick}" and el.get("type") == "groupchat"
    assert child_text(el, NS_CLIENT, "body") is None
    typing = cast.op.expect(lambda m: m.command == "TAGMSG")
    assert typing.tags["+typing"] == "active"
    cast.xmpp.raw(
        f"<message to='{room}' type='groupchat' id='cs-1'><paused xmlns='{NS_STATES}'/></message>"
    )
    tag = cast.op.expect(lambda m: m.command == "TAGMSG" and m.nick == cast.xmpp.nick)
    assert tag.params == (f"#{cast.room}",) and tag.tags["+typing"] == "paused"
    # Clients without message-tags and line chat get nothing.
    assert [m for m in cast.plain.sync() if m.command == "TAGMSG"] == []
    assert cast.line.sync() == []


def test_reactions_between_irc_xmpp_and_line(cast: Cast) -> None:
    room = room_jid(cast.room)
    cast.member.send(f"PRIVMSG #{cast.room} :ship it?")
    msgid = said(cast.op, "ship it?").tags["msgid"]
    xmpp_said(cast.xmpp, "ship it?")
    cast.line.sync()
    cast.op.send(f"@+draft/react=\U0001f44d;+draft/reply={msgid} TAGMSG #{cast.room}")
    el = cast.xmpp.expect(lambda el: child(el, NS_REACTIONS, "reactions") is not None)
    reactions = child(el, NS_REACTIONS, "reactions")
    assert reactions is not None and reactions.get("id") == msgid
    assert [r.text for r in reactions] == ["\U0001f44d"]
    seen = cast.line.expect(lambda o: o.get("type") == "react")
    assert (seen["react"], seen["id"], seen["from"]) == ("\U0001f44d", msgid, cast.op.nick)

    cast.xmpp.raw(
        f"<message to='{room}' type='groupchat' id='re-1'>"
        f"<reactions id='{msgid}' xmlns='{NS_REACTIONS}'>"
        "<reaction>\U0001f389</reaction><reaction>\U0001f44d</reaction></reactions>"
        "<store xmlns='urn:xmpp:hints'/></message>"
    )
    got = [
        cast.member.expect(
            lambda m: (
                m.command == "TAGMSG" and m.nick == cast.xmpp.nick and "+draft/react" in m.tags
            )
        )
        for _ in range(2)
    ]
    assert [(m.tags["+draft/react"], m.tags["+draft/reply"]) for m in got] == [
        ("\U0001f389", msgid),
        ("\U0001f44d", msgid),
    ]


def test_one_to_one_typing_and_reactions(world: World) -> None:
    irc_name, xmpp_name = world.nick("tirc"), world.nick("txmpp")
    irc = world.irc(irc_name, caps=("message-tags",))
    xmpp = world.xmpp(xmpp_name)
    irc.send(f"@+typing=active TAGMSG {xmpp_name}")
    el = xmpp.expect(lambda el: child(el, NS_STATES, "composing") is not None)
    assert el.get("type") == "chat" and el.get("from") == f"~{irc_name.lower()}@{DOMAIN}"
    xmpp.raw(
        f"<message to='~{irc_name.lower()}@{DOMAIN}' type='chat' id='t1'>"
        f"<composing xmlns='{NS_STATES}'/></message>"
    )
    tag = irc.expect(lambda m: m.command == "TAGMSG")
    assert tag.params == (irc_name,) and tag.tags["+typing"] == "active"
    assert tag.nick == xmpp_name
    irc.send(f"PRIVMSG {xmpp_name} :lunch?")
    msgid = xmpp_said(xmpp, "lunch?").get("id")
    xmpp.raw(
        f"<message to='~{irc_name.lower()}@{DOMAIN}' type='chat' id='t2'>"
        f"<reactions id='{msgid}' xmlns='{NS_REACTIONS}'><reaction>\U0001f355</reaction>"
        "</reactions></message>"
    )
    react = irc.expect(lambda m: m.command == "TAGMSG" and "+draft/react" in m.tags)
    assert (react.tags["+draft/react"], react.tags["+draft/reply"]) == ("\U0001f355", msgid)
    # A reaction from IRC to the XMPP user's message names it by the id its sender gave it.
    xmpp.raw(
        f"<message to='~{irc_name.lower()}@{DOMAIN}' type='chat' id='q-1'>"
        "<body>pizza?</body></message>"
    )
    theirs = irc.expect(lambda m: m.command == "PRIVMSG" and m.last == "pizza?").tags["msgid"]
    irc.send(f"@+draft/react=\U0001f44d;+draft/reply={theirs} TAGMSG {xmpp_name}")
    el = xmpp.expect(lambda el: child(el, NS_REACTIONS, "reactions") is not None)
    assert child(el, NS_REACTIONS, "reactions").get("id") == "q-1"  # type: ignore[union-attr]

    # Replies and corrections one-to-one name the same messages on both sides.
    irc.send(f"@+draft/reply={theirs} PRIVMSG {xmpp_name} :yes please")
    el = xmpp_said(xmpp, "yes please")
    assert child(el, NS_REPLY, "reply").get("id") == "q-1"  # type: ignore[union-attr]
    xmpp.raw(
        f"<message to='~{irc_name.lower()}@{DOMAIN}' type='chat' id='q-2'>"
        f"<body>pizza!</body><replace id='q-1' xmlns='{NS_CORRECT}'/></message>"
    )
    fixed = irc.expect(lambda m: m.command == "PRIVMSG" and m.last == "pizza!")
    assert fixed.tags["+draft/edit"] == theirs
    xmpp.raw(
        f"<message to='~{irc_name.lower()}@{DOMAIN}' type='chat' id='q-3'><body>sure</body>"
        f"<reply to='~{irc_name.lower()}@{DOMAIN}' id='{msgid}' xmlns='{NS_REPLY}'/></message>"
    )
    answer = irc.expect(lambda m: m.command == "PRIVMSG" and m.last == "sure")
    assert answer.tags["+draft/reply"] == msgid


def test_line_chat_in_text_mode_shows_reactions_not_typing(world: World) -> None:
    """Line chat in text mode sees a reaction as a line, and nothing of typing."""
    room = world.room("rtext")
    irc = world.irc(world.nick("tx"), caps=("message-tags",))
    text = LinePeer(world.ports["line"], world.nick("ttext"), json_mode=False)
    world.peers.append(text)
    enter(room, irc, text)
    irc.sync()
    text.sync()
    irc.send(f"@+typing=active TAGMSG #{room}")
    irc.send(f"@+draft/react=\U0001f44d;+draft/reply=abc TAGMSG #{room}")
    line = text.expect(lambda s: "reacted" in s)
    assert line == f"-!- {irc.nick} reacted \U0001f44d to message abc in #{room}"
    assert not [s for s in text.sync() if "typing" in s]
