"""Messages sent to a room: groupchat lines, subject changes, private messages, invitations.

An occupant's stanza goes on whole (:class:`RoomStanza`, :class:`relay.Relay`): with a body
through the core, so that every protocol, the history and moderation see it; without one
(reactions, chat states, markers) through the core as tags without text, so that XMPP
occupants get the stanza and IRC members the client tags it maps to (:mod:`protocols.xmpp.tags`);
to ``room/nick``, straight to the occupant's XMPP resources.  A retraction is
:mod:`protocols.xmpp.retract`'s.

Core refusals raised here reach the router, which answers with the matching stanza error
(``CannotSend`` and ``NotPermitted``: forbidden; ``NoSuchNick``: item-not-found; …).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from chatserver.core.errors import BadName
from chatserver.core.events import MessageKind
from chatserver.core.names import casefold, room_key
from chatserver.core.views import RoomView
from protocols.xmpp import relay
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, find
from protocols.xmpp.muc.chat import RoomStanza, stamp_occupant
from protocols.xmpp.muc.occupants import (
    RoomAddress,
    nick_at,
    occupant_id,
    parse_address,
)
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import child_text, sub
from protocols.xmpp.tags import relay_tags

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

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
    else:
        # A reaction, a chat state, a marker: the stanza for XMPP occupants, and IRC client
        # tags for IRC members where the stanza has a form in them (protocols.xmpp.tags).
        relay_tags(conn, msg, reflect(conn, room, msg), room=room.name)


def say(conn: Any, room: RoomView, msg: Element, body: str) -> None:
    kind, text = split_action(body)
    native = reflect(conn, room, msg)
    tags = client_tags(conn, room, msg)
    conn.service.say(conn.core, text=text, room=room.name, kind=kind, tags=tags, native=native)


def reflect(conn: Any, room: RoomView, msg: Element) -> RoomStanza:
    who = conn.user.who()
    jid = conn.occupant_jid(room.name, who.nick)
    return RoomStanza.of(msg, jid, conn.lang, occupant_id(conn, room.name, who))


# How far back a correction may reach for the message it corrects.
CORRECTABLE = 50


def client_tags(conn: Any, room: RoomView, msg: Element) -> tuple[tuple[str, str], ...]:
    """The IRCv3 client tags that say what the XMPP extensions say, for IRC users.

    A reply (XEP-0461) names the room's stanza-id, which is the IRC ``msgid``: it is
    ``+draft/reply``.  A correction (XEP-0308) names the sender's own id of a recent message
    of its own: ``+draft/edit`` with that message's ``msgid``, when it is still in the room's
    recent history.
    """
    tags: list[tuple[str, str]] = []
    reply = find(msg, ns.REPLY, "reply")
    if reply is not None and reply.get("id"):
        tags.append(("+draft/reply", reply.get("id") or ""))
    replace = find(msg, ns.CORRECT, "replace")
    if replace is not None and replace.get("id"):
        corrected = _corrected(conn, room, replace.get("id") or "")
        if corrected is not None:
            tags.append(("+draft/edit", corrected))
    return tuple(tags)


def _corrected(conn: Any, room: RoomView, client_id: str) -> str | None:
    nick = conn.user.key
    for said in reversed(conn.service.recent(room.name, CORRECTABLE)):
        native = said.native
        if (
            isinstance(native, RoomStanza)
            and native.client_id == client_id
            and casefold(said.source.nick) == nick
        ):
            return said.id
    return None


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
    """To ``room/nick``: a private message to that user, wherever it is connected from; its
    XMPP resources get the stanza from the sender's occupant JID (XEP-0045 §7.5)."""
    target = room.find_member(nick)
    if target is None:
        raise StanzaError("item-not-found", f"{nick} is not in this room")
    if find(msg, ns.MUC_USER, "x") is None:
        sub(msg, "x", ns=ns.MUC_USER)
    stamp_occupant(msg, occupant_id(conn, room.name, conn.user.who()))
    native = relay.of(
        msg, conn.jid, conn.lang, sender_as=conn.occupant_jid(room.name, conn.user.nick)
    )
    body = child_text(msg, "body")
    if not body:
        for client in target.clients():
            if client.protocol == "xmpp":
                relay.deliver(cast("XmppConnection", client), native, recipient=True)
        return
    kind, text = split_action(body)
    conn.service.say(conn.core, text=text, nick=target.nick, kind=kind, native=native)
