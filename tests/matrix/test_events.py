"""The event matrix: every event kind, sent from each protocol, seen natively on each protocol.

Each test is one sender protocol and one event kind.  The viewers are one long-lived client
of each protocol (IRC with away-notify and invite-notify, line chat in JSON and in text mode,
XMPP), and for events that act on someone, one target per protocol (IRC without capabilities,
line chat in text mode, XMPP), so every test covers the three receiver columns of its row:
sender and receiver make nine cells per event kind.  What each viewer must see comes from the
mapping table in :mod:`tests.matrix.forms` (and the README).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.matrix.clients import IrcPeer, LinePeer, Peer, XmppPeer
from tests.matrix.conftest import World
from tests.matrix.forms import Ev
from tests.matrix.runner import enter, irc_numeric, leave, line_error, step, xmpp_error

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PROTOCOLS = ("irc", "line", "xmpp")
TEXT = "hello <world> & \"all\" 'of' you 🙂"
REASON = "rule 3: no <blink> & no 'spam' ✋"
TOPIC = "Release on Friday <b>&amp;</b> 🚀"
AWAY = "lunch & <coffee> ☕"
KEY = "sesame"


@dataclass
class Cast:
    actors: dict[str, Peer]
    viewers: list[Peer]
    targets: dict[str, Peer]

    def all(self) -> list[Peer]:
        return [*self.actors.values(), *self.viewers, *self.targets.values()]


@pytest.fixture(scope="module")
def cast(world: World) -> Iterator[Cast]:
    made = Cast(
        actors={
            # The irc package (jaraco) acts for IRC: a real client library's commands.
            "irc": world.irc_pkg("alirc"),
            "line": world.line("alline"),
            "xmpp": world.xmpp("alxmpp"),
        },
        viewers=[
            world.irc("obirc", caps=("away-notify", "invite-notify", "message-tags")),
            world.line("obline"),
            world.line("obtext", json_mode=False),
            world.xmpp("obxmpp"),
        ],
        targets={
            "irc": world.irc("vicirc"),
            "line": world.line("vicline", json_mode=False),
            "xmpp": world.xmpp("vicxmpp"),
        },
    )
    yield made


@pytest.fixture
def scene(cast: Cast) -> Iterator[Cast]:
    # Whatever a previous test left unread is not this test's business.
    for peer in cast.all():
        peer.sync()
    yield cast


def cells(*kinds: str, without: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    return [(k, p) for k in kinds for p in PROTOCOLS if (k, p) not in without]


# -- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "sender"),
    # XMPP has no notices (see the README): a notice can be received there, not sent.
    cells("message", "action", "notice", without=(("notice", "xmpp"),)),
)
def test_room_messages(world: World, scene: Cast, kind: str, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    try:
        send = {"message": actor.say, "action": actor.act, "notice": actor.notice}[kind]
        step(actor, lambda: send(room, TEXT), [Ev(kind, actor.nick, room, TEXT)], scene.viewers)
    finally:
        leave(room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_private_messages(scene: Cast, sender: str) -> None:
    actor = scene.actors[sender]
    for viewer in scene.viewers:
        others = [v for v in scene.viewers if v is not viewer]
        for action in (False, True):
            kind = "privaction" if action else "privmsg"
            step(
                actor,
                lambda v=viewer, a=action: actor.msg(v.nick, TEXT, action=a),
                [Ev(kind, actor.nick, text=TEXT)],
                [viewer],
                not_seen_by=others,
            )


# -- membership ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_join(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, *scene.viewers)
    try:
        step(actor, lambda: actor.join(room), [Ev("join", actor.nick, room)], scene.viewers)
    finally:
        leave(room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_part_with_reason(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    try:
        step(
            actor,
            lambda: actor.part(room, REASON),
            [Ev("part", actor.nick, room, REASON)],
            scene.viewers,
        )
    finally:
        leave(room, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_quit_with_reason(world: World, scene: Cast, sender: str) -> None:
    room = world.room()
    quitter: Peer
    if sender == "irc":
        quitter = world.irc_pkg(world.nick("quitirc"))
    elif sender == "line":
        quitter = world.line(world.nick("quitline"))
    else:
        quitter = world.xmpp(world.nick("quitxmpp"))
    enter(room, *scene.viewers, quitter)
    try:
        # The server sees the connection close after the quit: wait for what follows.
        step(
            None,
            lambda: quitter.quit(REASON),
            # Every protocol marks a user's quit reason as the user's own words.
            [Ev("quit", quitter.nick, room, f"Quit: {REASON}")],
            scene.viewers,
            wait=True,
        )
    finally:
        leave(room, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_nick_change(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    old = actor.nick
    new = f"{old}2"

    def rename(to: str) -> None:
        if isinstance(actor, XmppPeer):
            actor.rename_in(room, to)
        else:
            actor.rename(to)

    try:
        step(actor, lambda: rename(new), [Ev("nick", old, room, new_nick=new)], scene.viewers)
        step(actor, lambda: rename(old), [Ev("nick", new, room, new_nick=old)], scene.viewers)
    finally:
        leave(room, actor, *scene.viewers)


# -- room state and moderation ------------------------------------------------------------------


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_topic(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    try:
        step(
            actor,
            lambda: actor.topic(room, TOPIC),
            [Ev("topic", actor.nick, room, TOPIC)],
            scene.viewers,
        )
    finally:
        leave(room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_kick_with_reason(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    targets = list(scene.targets.values())
    enter(room, actor, *scene.viewers, *targets)
    try:
        for index, target in enumerate(targets):
            still_in = targets[index + 1 :]
            step(
                actor,
                lambda t=target: actor.kick(room, t.nick, REASON),
                [Ev("kick", actor.nick, room, REASON, target=target.nick)],
                [*scene.viewers, target, *still_in],
            )
    finally:
        leave(room, actor, *scene.viewers)


def ban_mask(target: Peer) -> str:
    """What an operator bans: the account of a user who has one, else the nick."""
    return f"$a:{target.nick}" if isinstance(target, XmppPeer) else f"{target.nick}!*@*"


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_ban(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    targets = list(scene.targets.values())
    enter(room, actor, *scene.viewers, *targets)
    try:
        for index, target in enumerate(targets):
            still_in = targets[index + 1 :]
            mask = ban_mask(target)

            def ban(target: Peer = target, mask: str = mask) -> None:
                if isinstance(actor, XmppPeer):
                    # XMPP's ban: the outcast affiliation (a ban on the account, and out).
                    actor.outcast(room, target.nick, REASON)
                else:
                    # IRC's and line chat's: a ban, then a kick (a "kickban").
                    actor.ban(room, mask)
                    actor.kick(room, target.nick, REASON)

            events = [
                Ev("mode", actor.nick, room, mode="ban", arg=mask),
                Ev("kick", actor.nick, room, REASON, target=target.nick, banned=True),
            ]
            step(actor, ban, events, [*scene.viewers, target, *still_in])
            assert_join_refused(target, room, "banned")
    finally:
        leave(room, actor, *scene.viewers)


def assert_join_refused(peer: Peer, room: str, why: str) -> None:
    """``peer`` tries to join and is refused, in its own protocol."""
    peer.join(room)
    got = peer.sync()
    if isinstance(peer, IrcPeer):
        numeric = {"banned": "474", "invite_only": "473", "bad_key": "475"}[why]
        irc_numeric(got, numeric)
    elif isinstance(peer, LinePeer):
        if peer.json:
            assert line_error(got, "join_refused")["why"] == why
        else:
            assert any(s.startswith("!!! error:") for s in got), got
    else:
        assert isinstance(peer, XmppPeer)
        errors = [el for el in got if el.get("type") == "error"]
        assert len(errors) == 1, got
        condition = {
            "banned": "forbidden",
            "invite_only": "registration-required",
            "bad_key": "not-authorized",
        }[why]
        assert xmpp_error(errors[0]) == condition


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_modes_and_roles(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    targets = scene.targets
    enter(room, actor, *scene.viewers, *targets.values())
    viewers = [*scene.viewers, *targets.values()]
    a = actor.nick

    def change(mode: str, adding: bool, target: Peer | None = None) -> None:
        """The change as a user of the actor's protocol makes it."""
        if isinstance(actor, XmppPeer):
            if mode in ("op", "voice"):
                assert target is not None
                role = {"op": "moderator", "voice": "participant"}[mode]
                actor.set_role(room, target.nick, role if adding else "participant")
                return
            field = {
                "moderated": {"moderatedroom": "1" if adding else "0"},
                "invite_only": {"membersonly": "1" if adding else "0"},
                "key": {"passwordprotectedroom": "1", "roomsecret": KEY}
                if adding
                else {"passwordprotectedroom": "0"},
            }[mode]
            actor.configure(room, field)
            return
        letter = {"op": "o", "voice": "v", "moderated": "m", "invite_only": "i", "key": "k"}[mode]
        arg = target.nick if target is not None else KEY if (mode == "key" and adding) else None
        if isinstance(actor, LinePeer):
            actor.mode(room, ("+" if adding else "-") + mode, arg)
        else:
            actor.mode(
                room, ("+" if adding else "-") + letter, arg or ("*" if mode == "key" else None)
            )

    try:
        # Operator status, given and taken, to a user of each protocol.
        for target in targets.values():
            step(
                actor,
                lambda t=target: change("op", True, t),
                [
                    Ev(
                        "mode",
                        a,
                        room,
                        mode="op",
                        arg=target.nick,
                        target=target.nick,
                        role="moderator",
                        affiliation="owner",
                    )
                ],
                viewers,
            )
            step(
                actor,
                lambda t=target: change("op", False, t),
                [
                    Ev(
                        "mode",
                        a,
                        room,
                        mode="op",
                        adding=False,
                        arg=target.nick,
                        target=target.nick,
                        role="participant",
                        affiliation="none",
                    )
                ],
                viewers,
            )
        # Moderated: the unvoiced become visitors; then voice lets a user of each speak.
        step(
            actor,
            lambda: change("moderated", True),
            [Ev("mode", a, room, mode="moderated")],
            viewers,
        )
        for target in targets.values():
            member = "member" if isinstance(target, XmppPeer) else "none"
            step(
                actor,
                lambda t=target: change("voice", True, t),
                [
                    Ev(
                        "mode",
                        a,
                        room,
                        mode="voice",
                        arg=target.nick,
                        target=target.nick,
                        role="participant",
                        affiliation=member,
                    )
                ],
                viewers,
            )
        step(
            actor,
            lambda: change("moderated", False),
            [Ev("mode", a, room, mode="moderated", adding=False)],
            viewers,
        )
        step(
            actor,
            lambda: change("invite_only", True),
            [Ev("mode", a, room, mode="invite_only")],
            viewers,
        )
        step(
            actor, lambda: change("key", True), [Ev("mode", a, room, mode="key", arg=KEY)], viewers
        )
        step(
            actor,
            lambda: change("invite_only", False),
            [Ev("mode", a, room, mode="invite_only", adding=False)],
            viewers,
        )
        step(
            actor,
            lambda: change("key", False),
            [Ev("mode", a, room, mode="key", adding=False, arg="*")],
            viewers,
        )
    finally:
        leave(room, actor, *viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_away_and_back(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    try:
        step(actor, lambda: actor.away(AWAY), [Ev("away", actor.nick, room, AWAY)], scene.viewers)
        step(actor, lambda: actor.away(None), [Ev("away", actor.nick, room, None)], scene.viewers)
    finally:
        leave(room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_invite(world: World, scene: Cast, sender: str) -> None:
    actor, room = scene.actors[sender], world.room()
    enter(room, actor, *scene.viewers)
    if isinstance(actor, XmppPeer):
        actor.configure(room, {"membersonly": "1"})
    else:
        actor.mode(room, "+invite_only" if isinstance(actor, LinePeer) else "+i")
    for peer in (actor, *scene.viewers):
        peer.sync()
    invitees = list(scene.targets.values())
    try:
        for invitee in invitees:
            # The invited user is told in its own protocol; the room's members as their
            # protocol does (IRC invite-notify, line chat); XMPP tells only the invitee.
            step(
                actor,
                lambda i=invitee: actor.invite(i.nick, room),
                [Ev("invite", actor.nick, room, target=invitee.nick)],
                [invitee, *scene.viewers],
            )
            enter(room, invitee)
    finally:
        leave(room, actor, *scene.viewers, *invitees)
