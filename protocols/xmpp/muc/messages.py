"""Messages sent to a room: groupchat lines, subject changes, private messages, invitations.

Core refusals raised here reach the router, which answers with the matching stanza error
(``CannotSend`` and ``NotPermitted``: forbidden; ``NoSuchNick``: item-not-found; …).
"""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import BadName
from chatserver.core.events import MessageKind
from chatserver.core.names import room_key
from chatserver.core.views import RoomView
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, find
from protocols.xmpp.muc.chat import CLIENT_IDS, sending
from protocols.xmpp.muc.occupants import RoomAddress, nick_at, parse_address
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import child_text

ACTION_PREFIX = "/me "


def split_action(body: str) -> tuple[MessageKind, str]:
    """``/me waves`` is an action (XEP-0245), as IRC's CTCP ACTION is."""
    if body.startswith(ACTION_PREFIX) and len(body) > len(ACTION_PREFIX):
        return "action", body[len(ACTION_PREFIX) :]
    return "privmsg", body


def addressed_room(conn: Any, msg: Element) -> tuple[RoomAddress, RoomView]:
    """The addressed room, which the sender must be in."""
    address = parse_address(msg.get("to"))
    if address is None:
        raise StanzaError("bad-request", "address a room")
    try:
        room = conn.service.get_room(room_key(address.room))
    except BadName:
        raise StanzaError("jid-malformed", "not a valid room name") from None
    if room is None:
        raise StanzaError("item-not-found", "no such room")
    if conn.user is None or conn.user not in room.members:
        raise StanzaError("not-acceptable", "join the room first", "cancel")
    return address, room


@handler("message", "groupchat", None, service="muc")
def on_groupchat(conn: Any, msg: Element) -> None:
    address, room = addressed_room(conn, msg)
    if address.nick:
        raise StanzaError("bad-request", "groupchat goes to the room, not to an occupant")
    body = child_text(msg, "body")
    subject = child_text(msg, "subject")
    if body:
        say(conn, room, msg, body)
    elif subject is not None:
        conn.service.set_topic(conn.core, room.name, subject)
    # Anything else (chat states, markers) has nothing to say to the other protocols.


def say(conn: Any, room: RoomView, msg: Element, body: str) -> None:
    kind, text = split_action(body)
    origin = find(msg, ns.SID, "origin-id")
    key = id(conn.core.client)
    ids = (msg.get("id"), origin.get("id") if origin is not None else None)
    sending[key] = ids
    try:
        said = conn.service.say(conn.core, text=text, room=room.name, kind=kind)
    finally:
        sending.pop(key, None)
    said.rendered[CLIENT_IDS] = ids


@handler("message", None, None, service="muc")
def on_message(conn: Any, msg: Element) -> None:
    """Private messages to occupants (chat or normal) and invitations through the room."""
    if msg.get("type") == "error":
        return
    address, room = addressed_room(conn, msg)
    if address.nick:
        private(conn, room, address.nick, msg)
        return
    x = find(msg, ns.MUC_USER, "x")
    if x is not None:
        for invite in x.iterfind(f"{{{ns.MUC_USER}}}invite"):
            nick = nick_at(conn, invite.get("to"))
            if nick is None:
                raise StanzaError("jid-malformed", "invite whom?")
            conn.service.invite(conn.core, nick, room.name)


def private(conn: Any, room: RoomView, nick: str, msg: Element) -> None:
    """To ``room/nick``: a private message to that user, wherever it is connected from."""
    body = child_text(msg, "body")
    if not body:
        return
    target = room.find_member(nick)
    if target is None:
        raise StanzaError("item-not-found", f"{nick} is not in this room")
    kind, text = split_action(body)
    conn.service.say(conn.core, text=text, nick=target.nick, kind=kind)
