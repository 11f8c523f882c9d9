"""Message Displayed Synchronization (XEP-0490): the account's read positions as the PEP node
``urn:xmpp:mds:displayed:0``.

The account has one read position per conversation, shared by every protocol (IRC
``draft/read-marker``, XMPP displayed markers, line chat).  The node holds it for XMPP
clients: one item per conversation, whose id is the conversation's bare JID (the other
user's, or the room's) and whose payload is ``<displayed><stanza-id id by/></displayed>``
naming the last message read.

* A client that publishes an item moves the shared position to that message (never back),
  so an IRC client of the account sees ``MARKREAD``.
* When the position moves on any protocol, the account's oldest XMPP session writes the
  item (once for the account) and every resource that asked for the node's notifications
  (``+notify``) gets the event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed

from chatserver.core.events import Message, ReadMarker
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import pep, stanzas
from protocols.xmpp.jid import GUEST_MARK, try_parse, user_jid

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_MDS = pep.NS_MDS
# A read position is a message's time; IRC says it to the millisecond.
_SLACK = 0.001


def published(conn: XmppConnection, item_id: str, payload: etree._Element) -> Deferred[Any]:
    """A client published where it has read up to in one conversation: the shared position
    moves there.  A marker is a hint: one that names no message here is ignored."""
    sid = payload.find(f"{{{stanzas.NS_STANZA_ID}}}stanza-id")
    jid = try_parse(item_id)
    core = conn.core
    if (
        etree.QName(payload).namespace != NS_MDS
        or sid is None
        or not sid.get("id")
        or jid is None
        or jid.local is None
        or core is None
    ):
        return succeed(None)
    msgid = sid.get("id") or ""
    service = conn.service
    if jid.domain == conn.muc_domain:
        room = jid.local

        def in_room(message: Message | None) -> Any:
            if message is None or message.room != room:
                return None
            return service.mark_read(core, message.ts, room=room)

        d = service.history_find(msgid).addCallback(in_room)
    elif jid.domain == conn.domain:
        nick = jid.local.removeprefix(GUEST_MARK)

        def in_private(message: Message | None) -> Any:
            return None if message is None else service.mark_read(core, message.ts, nick=nick)

        d = service.archive_find(core, msgid).addCallback(in_private)
    else:
        return succeed(None)
    return d.addErrback(lambda f: None)


def marker_moved(conn: XmppConnection, event: ReadMarker) -> None:
    """The account's read position moved: its oldest XMPP session keeps the node's item up to
    date (the other sessions get the notification from it)."""
    bare = conn.bare_jid
    if bare is None or conn.core is None or conn.account is None:
        return
    sessions = conn.factory.resources(bare)
    if not sessions or sessions[0] is not conn:
        return
    service = conn.service
    before = (event.read_ts + _SLACK, "")
    if event.target.startswith("#"):
        room = event.target[1:]
        item_id = f"{room}@{conn.muc_domain}"
        by = item_id
        d = service.room_archive_query(room, 1, before=before, newest=True)
    else:
        item_id = user_jid(event.target, conn.domain)
        by = bare
        d = service.archive_query(conn.core, event.target, 1, before=before, newest=True)

    def found(messages: list[Message]) -> Any:
        if messages:
            return _publish(conn, item_id, messages[-1].id, by)
        return None

    d.addCallback(found)
    d.addErrback(lambda f: pep.log.failure("displayed marker of {jid}", f, jid=bare))


def _publish(conn: XmppConnection, item_id: str, msgid: str, by: str) -> Deferred[Any]:
    factory = conn.factory
    account = conn.account
    assert account is not None
    payload = stanzas.element("displayed", ns=NS_MDS)
    stanzas.sub(payload, "stanza-id", {"id": msgid, "by": by}, ns=stanzas.NS_STANZA_ID)
    item = PepItem(item_id, stanzas.to_bytes(payload).decode("utf-8"), factory.clock.seconds())

    def put(data: dict[pep.Key, PepNode]) -> Deferred[Any] | None:
        node = data.get(("pep", NS_MDS))
        if node is not None and any(
            i.id == item_id and i.payload == item.payload for i in node.items
        ):
            return None
        if node is None:
            # XEP-0490 §4: the owner's alone, every conversation kept.
            node = PepNode(node=NS_MDS, access_model="whitelist", max_items=0)
        node = pep.with_item(node, item, factory.config.pep_max_items)
        events = pep.items_element(pep.NS_PUBSUB_EVENT, NS_MDS, [item])
        return factory.pep.put(account, node).addCallback(
            lambda _: pep.notify(factory, conn, node, events)
        )

    return factory.pep.get(account).addCallback(put)
