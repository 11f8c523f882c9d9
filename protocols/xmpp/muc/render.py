"""Core room events in XMPP form, for every occupant whatever protocol caused them.

The XMPP connection's ``deliver`` calls :func:`render_room_event` for room events and for the
user events that change occupant presence (nick, quit, away, account).  A stanza that every
other occupant sees alike is rendered once per event and spliced per recipient (see
:mod:`build`); only a recipient's own presence (status 110) is built for it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    Invite,
    Join,
    Kick,
    Message,
    ModeChange,
    NickChange,
    Part,
    Quit,
    RoomRenamed,
    Topic,
    Who,
)
from chatserver.core.names import casefold
from chatserver.core.views import RoomView
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, cached_tail, send_spliced, send_to
from protocols.xmpp.muc.chat import invite_message, live_tail, status_message, subject_message
from protocols.xmpp.muc.join import joined_elsewhere
from protocols.xmpp.muc.occupants import banned
from protocols.xmpp.muc.presence import presence_of
from protocols.xmpp.stanzas import element, sub

# Room settings whose change XEP-0045 announces with status 104 (clients then re-read disco).
CONFIG_MODES = frozenset(
    {"moderated", "invite_only", "topic_lock", "secret", "registered_only", "key", "limit"}
)


_MESSAGE_KEY = ("xmpp", "muc", "message")


def render_room_event(conn: Any, event: Event) -> None:
    render = _RENDERERS.get(type(event))
    if render is not None:
        render(conn, event)


def _is_me(conn: Any, nick: str) -> bool:
    # A connection moved to another user gets its old user's departures while it has none.
    return conn.user is None or conn.user.key == casefold(nick)


def _send_presence(
    conn: Any, event: Event, room: RoomView, who: Who, variant: str, build: Callable[..., Element]
) -> None:
    """Another occupant's presence, cached per event; one's own, with 110, built here."""
    if _is_me(conn, who.nick):
        send_to(conn, build((ns.SELF,)))
    else:
        send_spliced(conn, "presence", cached_tail(event, ("muc", room.name, variant), build))


def _message(conn: Any, event: Message) -> None:
    if event.room is None:
        return
    cache = event.rendered
    data = cache.get(_MESSAGE_KEY)
    if data is None:
        data = cache[_MESSAGE_KEY] = live_tail(conn, event)
    send_spliced(conn, "message", data)


def _room(conn: Any, key: str) -> RoomView | None:
    # Events carry the canonical room key: a plain lookup, once per recipient.
    return conn.service.room_by_key(key)


def _join(conn: Any, event: Join) -> None:
    room = _room(conn, event.room)
    if room is None or conn.user is None:
        return
    if _is_me(conn, event.who.nick):
        if event.origin is not conn:
            joined_elsewhere(conn, room)
        # Else this connection's own join, which its handler answers.
        return

    def build() -> Element:
        member = room.members.get(conn.service.find_user(event.who.nick))
        return presence_of(conn, room, event.who, member)

    send_spliced(conn, "presence", cached_tail(event, ("muc", "join"), build))


def _part(conn: Any, event: Part) -> None:
    room = _room(conn, event.room)
    if room is None:
        return

    def build(codes: Iterable[str] = ()) -> Element:
        return presence_of(
            conn, room, event.who, None, unavailable=True, codes=codes, status=event.reason
        )

    _send_presence(conn, event, room, event.who, "part", build)


def _kick(conn: Any, event: Kick) -> None:
    room = _room(conn, event.room)
    if room is None:
        return
    # A ban is set before the kick that goes with it: the target is banned by now.
    outcast = banned(room, event.target)
    code = ns.BANNED if outcast else ns.KICKED

    def build(codes: Iterable[str] = ()) -> Element:
        return presence_of(
            conn,
            room,
            event.target,
            None,
            unavailable=True,
            outcast=outcast,
            codes=(code, *codes),
            actor=event.who.nick,
            reason=event.reason,
        )

    _send_presence(conn, event, room, event.target, "kick", build)


def _topic(conn: Any, event: Topic) -> None:
    room = _room(conn, event.room)
    setter: str | None = event.who.nick
    if room is None or room.find_member(event.who.nick) is None:
        setter = None

    def build() -> Element:
        return subject_message(conn, event.room, event.text, setter)

    send_spliced(conn, "message", cached_tail(event, ("muc", "topic"), build))


def _renamed(conn: Any, event: RoomRenamed) -> None:
    """The old room is destroyed with the new one as its alternate venue (XEP-0045 §10.9),
    which clients show and offer to join; this user is in it already, so the new room's
    occupants and subject follow, as when the user joins from another connection."""
    room = _room(conn, event.new)
    me = conn.user
    if room is None or me is None:
        return
    pres = element(
        "presence", {"from": conn.occupant_jid(event.old, me.nick), "type": "unavailable"}
    )
    x = sub(pres, "x", ns=ns.MUC_USER)
    sub(x, "item", {"affiliation": "none", "role": "none"})
    destroy = sub(x, "destroy", {"jid": f"{event.new}@{conn.muc_domain}"})
    if event.reason:
        sub(destroy, "reason", text=event.reason)
    send_to(conn, pres)
    joined_elsewhere(conn, room)


def _mode(conn: Any, event: ModeChange) -> None:
    room = _room(conn, event.room)
    if room is None:
        return
    nicks: dict[str, None] = {}
    for change in event.changes:
        if change.mode in ("op", "voice") and change.arg:
            nicks[casefold(change.arg)] = None
        elif change.mode == "moderated":
            # Unvoiced occupants turn into visitors (or back): their role changed.
            for user, member in room.members.items():
                if not member.op and not member.voice:
                    nicks[user.key] = None
    for nick in nicks:
        user = room.find_member(nick)
        if user is None:
            continue
        member = room.members[user]
        who = user.who()

        def build(codes: Iterable[str] = (), who: Who = who, member: Any = member) -> Element:
            return presence_of(conn, room, who, member, codes=codes)

        _send_presence(conn, event, room, who, f"mode:{user.key}", build)
    if any(change.mode in CONFIG_MODES for change in event.changes):
        tail = cached_tail(
            event,
            ("muc", "config"),
            lambda: status_message(conn, event.room, ns.CONFIG_CHANGED),
        )
        send_spliced(conn, "message", tail)


def _invite(conn: Any, event: Invite) -> None:
    # Everyone in the room hears of an invitation (IRC's invite-notify); XMPP tells only the
    # invited user.
    if conn.user is None or conn.user.key != casefold(event.target):
        return
    send_to(conn, invite_message(conn, event.room, conn.jid_of(event.who)))


def _shared_rooms(conn: Any, nick: str) -> list[RoomView]:
    """The rooms where the recipient sees ``nick`` (all of them when it is the recipient)."""
    me = conn.user
    user = conn.service.find_user(nick)
    if me is None or user is None:
        return []
    if user is me:
        return list(me.rooms.values())
    return [room for key, room in user.rooms.items() if key in me.rooms]


def _nick(conn: Any, event: NickChange) -> None:
    old, new = event.who, event.new_nick
    for room in _shared_rooms(conn, new):
        user = room.find_member(new)
        if user is None:
            continue
        member = room.members[user]
        who = user.who()

        def gone(codes: Iterable[str] = (), room: RoomView = room, member: Any = member) -> Element:
            return presence_of(
                conn,
                room,
                old,
                member,
                unavailable=True,
                new_nick=new,
                codes=(ns.NICK_CHANGED, *codes),
            )

        def back(
            codes: Iterable[str] = (), room: RoomView = room, who: Who = who, member: Any = member
        ) -> Element:
            return presence_of(conn, room, who, member, codes=codes)

        _send_presence(conn, event, room, who, "nick-old", gone)
        _send_presence(conn, event, room, who, "nick-new", back)


def _quit(conn: Any, event: Quit) -> None:
    for room in _shared_rooms(conn, event.who.nick):

        def build(codes: Iterable[str] = (), room: RoomView = room) -> Element:
            return presence_of(
                conn, room, event.who, None, unavailable=True, codes=codes, status=event.reason
            )

        _send_presence(conn, event, room, event.who, "quit", build)


def _refresh(conn: Any, event: Away | AccountChange) -> None:
    """The occupant's presence again: away state or affiliation may have changed."""
    for room in _shared_rooms(conn, event.who.nick):
        user = room.find_member(event.who.nick)
        if user is None:
            continue
        member = room.members[user]

        def build(
            codes: Iterable[str] = (), room: RoomView = room, member: Any = member
        ) -> Element:
            return presence_of(conn, room, event.who, member, codes=codes)

        _send_presence(conn, event, room, event.who, "refresh", build)


_RENDERERS: dict[type, Callable[[Any, Any], None]] = {
    Message: _message,
    Join: _join,
    Part: _part,
    Kick: _kick,
    Topic: _topic,
    RoomRenamed: _renamed,
    ModeChange: _mode,
    Invite: _invite,
    NickChange: _nick,
    Quit: _quit,
    Away: _refresh,
    AccountChange: _refresh,
}
