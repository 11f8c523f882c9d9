"""Core events in XMPP form: the table behind ``XmppConnection.deliver``.

* Private messages from XMPP users are the sender's stanza, relayed whole
  (:mod:`protocols.xmpp.relay`).  Others become ``type='chat'`` messages from ``nick@domain``
  (notices too; actions as ``/me text``, XEP-0245).  Either is rendered once per event with
  the recipient's ``to`` spliced in as bytes.
* Room events (a Message to a room, Join, Part, Kick, Topic, ModeChange, Invite) and the user
  events that show in rooms (NickChange, Quit, Away, AccountChange) go to the multi-user chat
  renderer ``protocols.xmpp.muc.render.render_room_event(conn, event)`` when that package is
  installed; it writes what it needs with ``conn.send``.
* Roster contacts who are not on XMPP come online, go offline and go away through the core's
  observers, whether or not they share a room with the subscriber (the factory's
  ``_observe``; :mod:`protocols.xmpp.presence`).
* A private message the user sent from another connection is copied, as a carbon, to the
  resources that enabled carbons (:mod:`protocols.xmpp.carbons`).
* A ServerNotice is a chat message from the domain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from chatserver.core.events import (
    AccountChange,
    Away,
    Invite,
    Join,
    Kick,
    Message,
    MetadataChange,
    ModeChange,
    NickChange,
    OfflineMessages,
    Part,
    Quit,
    ReadMarker,
    Redaction,
    RoomRenamed,
    ServerNotice,
    TagMessage,
    Topic,
)
from chatserver.core.names import casefold
from protocols.xmpp import metadata, retract, stanzas, tags
from protocols.xmpp.jid import address_of
from protocols.xmpp.relay import Relay, stored
from protocols.xmpp.relay import deliver as deliver_relay

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

ROOM_EVENTS = (Join, Part, Kick, Topic, ModeChange, Invite, RoomRenamed)
SHARED_EVENTS = (NickChange, Quit, Away, AccountChange)

_MISSING = object()
_room_renderer: Any = _MISSING


def room_renderer() -> Callable[[XmppConnection, Any], None] | None:
    """``render_room_event`` of the muc package, or None when it is not installed."""
    global _room_renderer
    if _room_renderer is _MISSING:
        try:
            from protocols.xmpp.muc.render import render_room_event
        except ImportError as err:
            if err.name not in ("protocols.xmpp.muc", "protocols.xmpp.muc.render"):
                raise
            _room_renderer = None
        else:
            _room_renderer = render_room_event
    return _room_renderer


def deliver(conn: XmppConnection, event: Any) -> None:
    renderer = _TABLE.get(type(event))
    if renderer is not None:
        renderer(conn, event)


def _message(conn: XmppConnection, event: Message) -> None:
    if event.room is not None:
        _room(conn, event)
    else:
        _private(conn, event)


def _room(conn: XmppConnection, event: Any) -> None:
    render = room_renderer()
    if render is not None:
        render(conn, event)


def chat_text(event: Message) -> str:
    """The body of a private message: actions as ``/me`` (XEP-0245), IRC formatting off."""
    text = stanzas.plain_text(event.text)
    return f"/me {text}" if event.kind == "action" else text


def _private(conn: XmppConnection, event: Message) -> None:
    user = conn.user
    native = event.native
    if isinstance(native, Relay):
        if user is not None:
            to_me = casefold(event.target or "") == user.key
            archive_id = event.id if archived(conn, event, to_me) else None
            deliver_relay(conn, native, to_me, archive_id)
        return
    if user is None or event.origin is conn:
        return
    if casefold(event.source.nick) == user.key and casefold(event.target or "") != user.key:
        # Sent by this user from another of its connections: a copy only for resources that
        # asked for carbons (XEP-0280); other clients would take it for a message to them.
        from protocols.xmpp import carbons

        if carbons.enabled(conn):
            conn.send(carbons.sent_copy(conn, event, chat_text(event)))
        return
    if archived(conn, event, True):
        # Kept in the recipient's archive: the stanza-id (XEP-0359) by its bare JID lets its
        # clients find the message in MAM.  Private messages have few recipients, so this
        # rendering per recipient stays off the room fan-out path.
        conn.send(private_message(conn, event, conn.jid or "", archived=True))
        return
    key = ("xmpp", "chat", conn.domain)
    data = event.rendered.get(key)
    if data is None:
        msg = private_message(conn, event, None, archived=False)
        data = event.rendered[key] = stanzas.to_bytes(msg)
    conn.send(stanzas.splice_to(data, conn.jid or ""))


def archived(conn: XmppConnection, event: Message, to_me: bool) -> bool:
    """Whether the private message ``event`` is in the archive of this connection's account
    (``to_me``: it is the recipient, else the sender), so that its copy carries the id."""
    user = conn.user
    if user is None or user.account is None or not conn.service.archives_private:
        return False
    if to_me:
        return conn.service.archive_keeps(user.account, event.source.account, event.source.nick)
    return conn.service.archive_keeps(user.account, event.target_account, event.target or "")


def private_message(conn: XmppConnection, event: Message, to: str | None, *, archived: bool) -> Any:
    msg = stanzas.element(
        "message",
        {
            "from": address_of(event.source, conn.domain),
            "to": to,
            "type": "chat",
            "id": event.id,
        },
    )
    stanzas.sub(msg, "body", text=chat_text(event))
    tags.private_children(conn, msg, event.tags)
    if archived:
        stanzas.sub(
            msg, "stanza-id", {"id": event.id, "by": conn.bare_jid}, ns=stanzas.NS_STANZA_ID
        )
    return msg


# conn.extra key: offline messages that came before the session's initial presence.
OFFLINE_HELD = "render.offline_held"


def _offline(conn: XmppConnection, event: OfflineMessages) -> None:
    """Messages kept while the account was away: each as it was sent, with an XEP-0203
    delay stamp of its time and its archive id.  They come with the initial presence, as
    Prosody sends them (RFC 6121 §8.5.2: a resource that has sent none is not available),
    so that a client reading its roster and bookmarks first does not get them before it
    is ready: until then they wait here."""
    if not conn.available:
        conn.extra.setdefault(OFFLINE_HELD, []).append(event)
        return
    _send_offline(conn, event)


def release_offline(conn: XmppConnection) -> None:
    """``conn`` sent its initial presence: the offline messages that waited for it."""
    for event in conn.extra.pop(OFFLINE_HELD, None) or ():
        _send_offline(conn, event)


def keep_held_offline(conn: XmppConnection) -> None:
    """The session ends before its initial presence: the offline messages that waited for
    it are kept for the account's next login again, not lost."""
    held = conn.extra.pop(OFFLINE_HELD, None)
    if not held or conn.account is None:
        return
    ids = [message.id for event in held for message in event.messages]
    d = conn.service.keep_offline(conn.account, ids)
    d.addErrback(lambda f: log.failure("keeping offline messages of {a}", f, a=conn.account))


def _send_offline(conn: XmppConnection, event: OfflineMessages) -> None:
    from protocols.xmpp.mam import stamp

    for message in event.messages:
        el = stored(message.native)
        if el is None:
            el = private_message(conn, message, conn.jid or "", archived=True)
        else:
            # The sender's stanza as it was written (an OMEMO message stays one).
            stanzas.sub(
                el, "stanza-id", {"id": message.id, "by": conn.bare_jid}, ns=stanzas.NS_STANZA_ID
            )
        stanzas.sub(
            el,
            "delay",
            {"from": conn.domain, "stamp": stamp(message.ts)},
            ns=stanzas.NS_DELAY,
        )
        conn.send(el)


def _read_marker(conn: XmppConnection, event: ReadMarker) -> None:
    """The account's read position moved: the displayed-markers node follows (XEP-0490)."""
    from protocols.xmpp import mds

    mds.marker_moved(conn, event)


def _server_notice(conn: XmppConnection, event: ServerNotice) -> None:
    msg = stanzas.element("message", {"from": conn.domain, "to": conn.jid, "type": "chat"})
    stanzas.sub(msg, "body", text=stanzas.plain_text(event.text))
    conn.send(msg)


_TABLE: dict[type, Callable[[XmppConnection, Any], None]] = {
    Message: _message,
    ServerNotice: _server_notice,
    OfflineMessages: _offline,
    ReadMarker: _read_marker,
    TagMessage: tags.render,
    Redaction: retract.render,
    MetadataChange: metadata.render,
    **{cls: _room for cls in ROOM_EVENTS},
    **{cls: _room for cls in SHARED_EVENTS},
}
