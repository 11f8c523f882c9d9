"""Entering, leaving and renaming by presence (XEP-0045 §7.2, §7.6, §7.14).

The core has one nick per user: the session's nick is the occupant nick, and a join asking
for another gets the session's nick with status 210.  A user is in a room with every one of
its connections, so a connection that joins a room its user is already in (from IRC, or from
another resource) just gets the room's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatserver.core.errors import BadName, JoinRefused
from chatserver.core.names import casefold, room_key
from chatserver.core.views import RoomView
from protocols.costs import FANOUT
from protocols.xmpp import autojoin, presence
from protocols.xmpp.muc import extras, ns
from protocols.xmpp.muc.build import Element, find, send_spliced, send_to, tail
from protocols.xmpp.muc.chat import subject_message
from protocols.xmpp.muc.history import HistoryRequest, select
from protocols.xmpp.muc.names import forget
from protocols.xmpp.muc.occupants import affiliation, parse_address
from protocols.xmpp.muc.presence import occupant_presence, occupant_tail, presence_of
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import child_text

# JoinRefused.why -> (error type, condition), as XEP-0045 §7.2 names them.
JOIN_ERRORS = {
    JoinRefused.BAD_KEY: ("auth", "not-authorized"),
    JoinRefused.INVITE_ONLY: ("auth", "registration-required"),
    JoinRefused.REGISTERED_ONLY: ("auth", "registration-required"),
    JoinRefused.BANNED: ("auth", "forbidden"),
    JoinRefused.FULL: ("wait", "service-unavailable"),
    JoinRefused.TOO_MANY_ROOMS: ("wait", "resource-constraint"),
}


@dataclass(slots=True)
class JoinRequest:
    """What a joining connection asked for, which its own presence and history answer."""

    nick: str
    history: HistoryRequest = field(default_factory=HistoryRequest)
    # The join presence's id, which the joiner's own presence carries back (XEP-0045 §7.2.3).
    id: str | None = None
    created: bool = False


@handler("presence", None, None, service="muc", per_delivery=FANOUT)
def on_presence(conn: Any, pres: Element) -> None:
    address = parse_address(pres.get("to"))
    kind = pres.get("type")
    if address is None or kind not in (None, "unavailable"):
        # Presence to the service itself, errors, probes and subscriptions mean nothing here.
        return
    if conn.user is None:
        raise StanzaError("not-authorized")
    try:
        key = room_key(address.room)
    except BadName:
        raise StanzaError("jid-malformed", "not a valid room name") from None
    if kind == "unavailable":
        leave(conn, key, pres)
        return
    if not address.nick:
        raise StanzaError("jid-malformed", "say which nick to join as")
    room = conn.service.get_room(key)
    muc = find(pres, ns.MUC, "x")
    user = conn.user
    # Kept before the core announces anything, so that the presences it causes carry them.
    changed = extras.remember(user, key, extras.kept(conn, pres))
    if room is not None and user in room.members and muc is None:
        if casefold(address.nick) != user.key:
            # A nick change (§7.6): refusals such as NickInUse become the router's errors.
            conn.service.rename(conn.core, address.nick)
        # A presence update to the room (XEP-0045 §7.7): the user's one away state, which
        # every room it is in shows.
        away = user.away
        presence.sync_away(conn, child_text(pres, "show"), child_text(pres, "status"))
        if changed and user.away == away:
            # Only the client's extensions changed (a new avatar, new capabilities): the core
            # has nothing to announce, so the room's XMPP occupants are told here.
            _announce(conn, room, pres.get("id"))
        return
    join(conn, key, address.nick, muc, pres.get("id"))


def _announce(conn: Any, room: RoomView, id_: str | None) -> None:
    """The occupant's presence again to the room's XMPP occupants, with the client's id (as
    Prosody relays a presence update)."""
    me = conn.user
    member = room.members.get(me)
    others = presence_of(conn, room, me.who(), member)
    if id_:
        others.set("id", id_)
    rest = tail(others)
    for user in list(room.members):
        for client in user.clients():
            if getattr(client, "protocol", None) != "xmpp" or client.jid is None:
                continue
            if user is me:
                own = presence_of(client, room, me.who(), member, codes=[ns.SELF])
                if id_:
                    own.set("id", id_)
                send_to(client, own)
            else:
                send_spliced(client, "presence", rest)


def join(conn: Any, key: str, nick: str, muc: Element | None, id_: str | None = None) -> None:
    password = child_text(muc, "password", ns.MUC) if muc is not None else None
    history = HistoryRequest.parse(find(muc, ns.MUC, "history") if muc is not None else None)
    try:
        result = conn.service.join(conn.core, key, password)
    except JoinRefused as err:
        error_type, condition = JOIN_ERRORS.get(err.why, ("cancel", "not-allowed"))
        raise StanzaError(condition, err.reason, error_type) from None
    # The core delivered this connection its own Join (or none, if the user was in the room
    # already), which the renderer leaves to this answer.
    send_room_state(conn, result.room, JoinRequest(nick, history, id_, created=result.created))
    if result.created:
        forget(key)


def joined_elsewhere(conn: Any, room: RoomView) -> None:
    """Another connection of this connection's user joined ``room`` (or this one logged in to
    a user that is in it): the room appears here too."""
    send_room_state(conn, room, JoinRequest(conn.user.nick))


def show_rooms(conn: Any) -> None:
    """A resource came online whose user is in rooms already (joined from another client, or
    kept in them by always-on): each room appears here as joined, with its recent history,
    unless the client joins it itself from its bookmarks."""
    autojoin.show_rooms(conn, _show_room)


def _show_room(conn: Any, name: str) -> None:
    room = conn.service.get_room(name)
    if room is not None and conn.user in room.members:
        joined_elsewhere(conn, room)


def send_room_state(conn: Any, room: RoomView, request: JoinRequest) -> None:
    """Occupants, then the joiner's own presence, then history, then the subject."""
    me = conn.user
    autojoin.joined(conn, room.name)
    for user, member in list(room.members.items()):
        if user is not me:
            send_spliced(conn, "presence", occupant_tail(conn, room, user, member))
    codes = [ns.SELF, ns.NON_ANONYMOUS, ns.LOGGED]
    if request.created:
        # Rooms are created unlocked (as Prosody does); an instant-room form is still accepted.
        codes.append(ns.CREATED)
    if request.nick != me.nick:
        codes.append(ns.NICK_ASSIGNED)
    own = presence_of(conn, room, me.who(), room.members.get(me), codes=codes)
    if request.id:
        own.set("id", request.id)
    send_to(conn, own)
    default = conn.service.settings.join_history_lines
    for _msg, rest in select(conn, room.name, request.history, default):
        send_spliced(conn, "message", rest)
    send_to(conn, subject_message(conn, room.name, room.topic))


def leave(conn: Any, key: str, pres: Element) -> None:
    reason = child_text(pres, "status") or ""
    room = conn.service.get_room(key)
    if room is not None and conn.user in room.members:
        conn.service.part(conn.core, key, reason)
        return
    # Not in the room (any more): confirm anyway, so that the client is not left waiting.
    who = conn.user.who()
    affiliation_ = affiliation(room, who, None) if room is not None else "none"
    el = occupant_presence(
        conn, key, who, role_="none", affiliation_=affiliation_, unavailable=True, codes=[ns.SELF]
    )
    send_to(conn, el)
