"""Moderation across protocols: a room operator on any protocol acts on members of every
protocol, and a member who may not act is told so in its own protocol.

(The events themselves — kick, ban, modes, topic from each protocol as seen on each — are in
``test_events``; here are their effects and the refusals.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.matrix.clients import (
    IrcPeer,
    IrcPkgPeer,
    LinePeer,
    Peer,
    XmppPeer,
    local,
    room_jid,
)
from tests.matrix.conftest import PASSWORD, World
from tests.matrix.forms import Ev, check_none, describe, wants
from tests.matrix.runner import enter, irc_numeric, leave, line_error, step, xmpp_error

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PROTOCOLS = ("irc", "line", "xmpp")


@pytest.fixture(scope="module")
def crew(world: World) -> Iterator[dict[str, Peer]]:
    """An operator-to-be and a plain member on each protocol."""
    yield {
        "op-irc": world.irc("modirc"),
        "op-line": world.line("modline"),
        "op-xmpp": world.xmpp("modxmpp"),
        "irc": world.irc("memirc"),
        "line": world.line("memline"),
        "xmpp": world.xmpp("memxmpp"),
    }


def members(crew: dict[str, Peer]) -> list[Peer]:
    return [crew[p] for p in PROTOCOLS]


def refusal(peer: Peer, items: list, *, iq: bool = False) -> None:
    """The one refusal ``peer`` got, in its protocol: 482, ``not_permitted``, ``forbidden``."""
    if isinstance(peer, IrcPeer):
        irc_numeric(items, "482")
    elif isinstance(peer, LinePeer):
        line_error(items, "not_permitted")
    else:
        errors = [el for el in items if el.get("type") == "error"]
        assert len(errors) == 1, [describe(el) for el in items]
        assert local(errors[0]) == ("iq" if iq else "message")
        assert xmpp_error(errors[0]) == "forbidden"


@pytest.mark.parametrize("actor_on", PROTOCOLS)
def test_a_member_who_is_not_an_operator_is_refused_in_its_own_protocol(
    world: World, crew: dict[str, Peer], actor_on: str
) -> None:
    room = world.room("deny")
    op = crew["op-irc"]
    actor = crew[actor_on]
    others = [m for m in members(crew) if m is not actor]
    enter(room, op, *members(crew))
    victim = others[0]
    try:
        # Kick.
        if isinstance(actor, XmppPeer):
            actor.raw(
                f"<iq type='set' id='k1' to='{room_jid(room)}'>"
                "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                f"<item nick='{victim.nick}' role='none'/></query></iq>"
            )
        else:
            actor.kick(room, victim.nick, "no")
        refusal(actor, actor.sync(), iq=True)
        # The topic (new rooms lock it to operators).
        actor.topic(room, "mine now")
        refusal(actor, actor.sync())
        # A mode.
        if isinstance(actor, XmppPeer):
            actor.raw(
                f"<iq type='set' id='m1' to='{room_jid(room)}'>"
                "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_moderatedroom'>"
                "<value>1</value></field></x></query></iq>"
            )
        else:
            actor.mode(room, "+m" if isinstance(actor, IrcPeer) else "+moderated")
        refusal(actor, actor.sync(), iq=True)
        # Nobody saw anything happen.
        undone = [
            Ev("kick", actor.nick, room, "no", target=victim.nick),
            Ev("topic", actor.nick, room, "mine now"),
            Ev("mode", actor.nick, room, mode="moderated"),
        ]
        for viewer in (op, *others):
            check_none(viewer, viewer.sync(), [w for ev in undone for w in wants(ev, viewer)])
    finally:
        leave(room, op, *members(crew))


def speak_refused(peer: Peer, room: str) -> None:
    """``peer`` says something and is refused in its protocol (404, cannot_send, forbidden)."""
    peer.say(room, "can anyone hear me?")
    items = peer.sync()
    if isinstance(peer, IrcPeer):
        irc_numeric(items, "404")
    elif isinstance(peer, LinePeer):
        line_error(items, "cannot_send")
    else:
        errors = [el for el in items if el.get("type") == "error"]
        assert len(errors) == 1, [describe(el) for el in items]
        assert xmpp_error(errors[0]) == "forbidden"


@pytest.mark.parametrize("op_on", PROTOCOLS)
def test_an_operators_modes_bind_members_of_every_protocol(
    world: World, crew: dict[str, Peer], op_on: str
) -> None:
    room = world.room("mod")
    op = crew[f"op-{op_on}"]
    enter(room, op, *members(crew))
    try:
        if isinstance(op, XmppPeer):
            op.configure(room, {"moderatedroom": "1"})
        else:
            op.mode(room, "+m" if isinstance(op, IrcPeer) else "+moderated")
        op.sync()
        for member in members(crew):
            speak_refused(member, room)
        # Voiced, each may speak again, and everyone hears it.
        for member in members(crew):
            if isinstance(op, XmppPeer):
                op.set_role(room, member.nick, "participant")
            else:
                op.mode(room, "+v" if isinstance(op, IrcPeer) else "+voice", member.nick)
            op.sync()
            others = [m for m in members(crew) if m is not member]
            step(
                member,
                lambda m=member: m.say(room, f"{m.protocol} has a voice"),
                [Ev("message", member.nick, room, f"{member.protocol} has a voice")],
                [*others, op] if not isinstance(op, IrcPkgPeer) else others,
            )
    finally:
        leave(room, op, *members(crew))


@pytest.mark.parametrize("kicker_on", PROTOCOLS)
def test_a_kicked_member_is_out_of_the_room_on_its_protocol(
    world: World, crew: dict[str, Peer], kicker_on: str
) -> None:
    room = world.room("out")
    op = crew[f"op-{kicker_on}"]
    enter(room, op, *members(crew))
    try:
        for member in members(crew):
            op.kick(room, member.nick, "out")
            op.sync()
            member.sync()
            # No longer a member: it cannot send to the room (new rooms take members only).
            member.say(room, "still here?")
            items = member.sync()
            if isinstance(member, IrcPeer):
                irc_numeric(items, "404")
            elif isinstance(member, LinePeer):
                line_error(items, "cannot_send")
            else:
                errors = [el for el in items if el.get("type") == "error"]
                assert len(errors) == 1, [describe(el) for el in items]
                assert xmpp_error(errors[0]) == "not-acceptable"
    finally:
        leave(room, op)


@pytest.mark.parametrize("banner_on", PROTOCOLS)
def test_a_ban_by_account_keeps_the_account_out_on_every_protocol(
    world: World, crew: dict[str, Peer], banner_on: str
) -> None:
    room = world.room("acct")
    op = crew[f"op-{banner_on}"]
    name = world.nick("banned")
    world.register(name, PASSWORD)
    enter(room, op)
    try:
        if isinstance(op, XmppPeer):
            # An XMPP moderator bans a JID: the account behind it.
            op.wait(op.muc.set_affiliation, room_jid(room), "outcast", jid=f"{name}@localhost")
        else:
            op.ban(room, f"$a:{name}")
        op.sync()
        # Whatever protocol the account comes from, and whatever nick it uses on IRC.
        irc = world.irc(world.nick("alias"), sasl=(name, PASSWORD))
        irc.join(room)
        irc_numeric(irc.sync(), "474")
        irc.close()
        line = world.line(name, password=PASSWORD)
        line.join(room)
        assert line_error(line.sync(), "join_refused")["why"] == "banned"
        line.close()
        xmpp = world.xmpp(name)
        xmpp.join(room)
        error = xmpp.expect(lambda el: local(el) == "presence" and el.get("type") == "error")
        assert xmpp_error(error) == "forbidden"
        xmpp.close()
    finally:
        leave(room, op)
