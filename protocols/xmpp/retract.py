"""Message retraction (XEP-0424 v0.4) and moderation (XEP-0425 v0.3), as the core's redaction.

* In a room, ``<retract id=X/>`` from an occupant names the room's stanza-id, which is the
  core's message id (the IRC msgid): the core removes the message from history and tells
  everyone; XMPP occupants get the occupant's stanza reflected, IRC clients ``REDACT``.
* A moderator's ``<moderate id=X><retract/></moderate>`` IQ to the room does the same; the
  room announces it from its own JID with ``<moderated by=…/>`` (XEP-0425).
* One-to-one, the id is the one the sender gave its message.  The stanza is relayed whole to
  the XMPP resources (as every one-to-one stanza is) and, when the message is in the sender's
  archive, removed there and told to the other protocols.
* A redaction from IRC or line chat reaches XMPP users as a retraction built here: from the
  redactor's occupant JID when it removed its own message, else as a moderation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from chatserver.core.errors import ChatError
from chatserver.core.events import Redaction
from chatserver.core.names import casefold
from protocols.xmpp import relay, stanzas
from protocols.xmpp.jid import address_of
from protocols.xmpp.relay import Relay
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_RETRACT = "urn:xmpp:message-retract:1"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_FALLBACK = "urn:xmpp:fallback:0"
NS_HINTS = "urn:xmpp:hints"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"

FALLBACK_TEXT = "/me retracted a previous message, but it's unsupported by your client."
MODERATED_TEXT = "This message has been moderated."

# How many one-to-one messages per server the ids their XMPP senders gave are remembered
# for, so that a retraction naming one finds the message in the archive.
SENT_IDS = 10000


class SentIds:
    """(sender's bare JID, the id it gave) <-> the core's id of its one-to-one messages."""

    def __init__(self, size: int = SENT_IDS) -> None:
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._given: dict[str, str] = {}
        self._size = size

    def add(self, sender: str, client_id: str | None, msgid: str) -> None:
        if not client_id:
            return
        self._ids[(sender, client_id)] = msgid
        self._given[msgid] = client_id
        if len(self._ids) > self._size:
            _, gone = self._ids.popitem(last=False)
            self._given.pop(gone, None)

    def get(self, sender: str, client_id: str) -> str:
        # An id it did not give (its own message sent from IRC) is the core's id already.
        return self._ids.get((sender, client_id), client_id)

    def given(self, msgid: str) -> str:
        """The id an XMPP sender gave the message the core knows as ``msgid`` (the id its
        XMPP recipients know it by), or ``msgid`` for a message from another protocol."""
        return self._given.get(msgid, msgid)


def sent_ids(conn: Any) -> SentIds:
    """The factory's table (made on first use: one per server)."""
    factory = conn.factory
    table = getattr(factory, "retract_ids", None)
    if table is None:
        table = factory.retract_ids = SentIds()
    return table


def _retract_of(stanza: etree._Element) -> str:
    el = stanza.find(f"{{{NS_RETRACT}}}retract")
    msgid = el.get("id") if el is not None else None
    if not msgid:
        raise StanzaError("bad-request", "a retraction names the message by its id")
    return msgid


# -- from XMPP ---------------------------------------------------------------------------------
# The room and one-to-one modules are imported where used: both import this one (through
# protocols.xmpp.tags), which the router must load first.


@handler("message", "groupchat", NS_RETRACT, service="muc")
def retract_in_room(conn: Any, msg: etree._Element) -> Deferred:
    from protocols.xmpp.muc.messages import addressed_room, reflect

    address, room = addressed_room(conn, msg)
    if address.nick:
        raise StanzaError("bad-request", "groupchat goes to the room, not to an occupant")
    msgid = _retract_of(msg)
    native = reflect(conn, room, msg)
    return conn.service.redact(conn.core, msgid, room=room.name, native=native)


@handler("iq", "set", NS_MODERATE, service="muc")
def moderate(conn: Any, iq: etree._Element) -> Deferred:
    from protocols.xmpp.muc.messages import addressed_room

    address, room = addressed_room(conn, iq)
    if address.nick:
        raise StanzaError("bad-request", "moderate messages of the room")
    payload = iq.find(f"{{{NS_MODERATE}}}moderate")
    if payload is None or not payload.get("id"):
        raise StanzaError("bad-request", "moderate names the message by its stanza-id")
    if payload.find(f"{{{NS_RETRACT}}}retract") is None:
        raise StanzaError("feature-not-implemented", "only retraction is supported", "cancel")
    reason = stanzas.child_text(payload, "reason", NS_MODERATE) or ""
    d = conn.service.redact(conn.core, payload.get("id") or "", room=room.name, reason=reason)
    d.addCallback(lambda _: conn.iq_result(iq))
    return d


@handler("message", "chat", NS_RETRACT)
def retract_private(conn: XmppConnection, stanza: etree._Element) -> Deferred | None:
    """Relayed whole to XMPP (the rule of every one-to-one stanza); removed from the archives
    and told to the other protocols when the sender's archive has the message."""
    from protocols.xmpp.im import _pass_on, _target

    target = _target(conn, stanza)
    if target is None or conn.core is None or conn.bare_jid is None:
        return None
    client_id = _retract_of(stanza)
    msgid = sent_ids(conn).get(conn.bare_jid, client_id)
    native = relay.of(stanza, conn.jid or "", conn.lang)
    local = target.local or ""
    nick = local[1:] if local.startswith("~") else local
    d = conn.service.redact(conn.core, msgid, nick=nick, native=native)

    def not_in_archive(failure: Any) -> None:
        # Not ours to remove, or not kept: XMPP clients still get what the sender wrote.
        failure.trap(ChatError)
        _pass_on(conn, stanza, target)

    d.addErrback(not_in_archive)
    return d


# -- to XMPP -----------------------------------------------------------------------------------


def render(conn: XmppConnection, event: Redaction) -> None:
    if event.room is not None:
        _room(conn, event)
        return
    user = conn.user
    if user is None:
        return
    native = event.native
    mine = casefold(event.target or "") == user.key
    if isinstance(native, Relay):
        relay.deliver(conn, native, mine)
        return
    if not mine:
        return
    el = stanzas.element(
        "message",
        {
            "from": address_of(event.who, conn.domain),
            "to": conn.jid,
            "type": "chat",
            "id": event.id,
        },
    )
    _retraction(el, event.msgid)
    conn.send(el)


def _retraction(el: etree._Element, msgid: str) -> etree._Element:
    retract = stanzas.sub(el, "retract", {"id": msgid}, ns=NS_RETRACT)
    stanzas.sub(el, "fallback", {"for": NS_RETRACT}, ns=NS_FALLBACK)
    stanzas.sub(el, "body", text=FALLBACK_TEXT)
    stanzas.sub(el, "store", ns=NS_HINTS)
    return retract


def _room(conn: Any, event: Redaction) -> None:
    from protocols.xmpp.muc.build import cached_tail, send_spliced
    from protocols.xmpp.muc.chat import RoomStanza, room_jid
    from protocols.xmpp.muc.occupants import occupant_id

    assert event.room is not None
    room = event.room
    native = event.native
    if isinstance(native, RoomStanza):
        send_spliced(conn, "message", native.tail())
        return

    def build() -> etree._Element:
        if event.who.key == event.sender.key and event.who.account == event.sender.account:
            el = stanzas.element(
                "message",
                {
                    "from": conn.occupant_jid(room, event.who.nick),
                    "type": "groupchat",
                    "id": event.id,
                },
            )
            _retraction(el, event.msgid)
            return el
        el = stanzas.element(
            "message", {"from": room_jid(conn, room), "type": "groupchat", "id": event.id}
        )
        retract = stanzas.sub(el, "retract", {"id": event.msgid}, ns=NS_RETRACT)
        moderated = stanzas.sub(
            retract, "moderated", {"by": conn.occupant_jid(room, event.who.nick)}, ns=NS_MODERATE
        )
        stanzas.sub(
            moderated, "occupant-id", {"id": occupant_id(conn, room, event.who)}, ns=NS_OCCUPANT_ID
        )
        if event.reason:
            stanzas.sub(retract, "reason", text=stanzas.xml_safe(event.reason))
        stanzas.sub(el, "fallback", {"for": NS_RETRACT}, ns=NS_FALLBACK)
        stanzas.sub(el, "body", text=MODERATED_TEXT)
        stanzas.sub(el, "store", ns=NS_HINTS)
        return el

    send_spliced(conn, "message", cached_tail(event, ("retract", room), build))
