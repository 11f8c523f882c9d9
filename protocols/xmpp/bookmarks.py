"""Bookmarks kept in step: XEP-0402 (PEP node ``urn:xmpp:bookmarks:1``) and XEP-0048
(``storage:bookmarks``, in private storage or in the PEP node of that name), as Prosody's
``mod_bookmarks`` keeps them.

The XEP-0402 node is the one copy: an item per room, its id the room's JID.  A client using
XEP-0048 reads a ``<storage/>`` made from it, and what it writes is turned into XEP-0402
items: new and changed rooms are published, rooms left out are retracted (an empty
``<storage/>`` purges the node), each change notified to the owner's resources that ask for
``urn:xmpp:bookmarks:1`` events.  Any change of the node also tells the owner's resources
that ask for ``storage:bookmarks`` events the whole ``<storage/>`` again (XEP-0048 over PEP
publishes it as one item, ``current``), and so does a resource's first presence.

Advertised on the account's own disco#info as ``urn:xmpp:bookmarks:1#compat`` (private
storage) and ``#compat-pep`` (the legacy PEP node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import pep, stanzas
from protocols.xmpp.router import StanzaError

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
FEATURES = (f"{NS_BOOKMARKS}#compat", f"{NS_BOOKMARKS}#compat-pep")
KEY: pep.Key = ("pep", NS_BOOKMARKS)
# The XEP-0402 node as XEP-0402 §5 asks clients to configure it.
NODE = PepNode(node=NS_BOOKMARKS, access_model="whitelist", max_items=0)


def legacy_storage(node: PepNode | None) -> etree._Element:
    """The XEP-0048 ``<storage/>`` of the XEP-0402 node's items."""
    storage = stanzas.element("storage", ns=NS_LEGACY)
    for item in node.items if node is not None else ():
        try:
            conference = etree.fromstring(item.payload)
        except etree.XMLSyntaxError:
            continue
        if conference.tag != f"{{{NS_BOOKMARKS}}}conference":
            continue
        legacy = stanzas.sub(
            storage,
            "conference",
            {
                "jid": item.id,
                "name": conference.get("name"),
                "autojoin": conference.get("autojoin"),
            },
        )
        for field in ("nick", "password"):
            text = conference.findtext(f"{{{NS_BOOKMARKS}}}{field}")
            if text is not None:
                stanzas.sub(legacy, field, text=text)
    return storage


def _conference_of(legacy: etree._Element) -> str:
    """The XEP-0402 ``<conference/>`` payload, serialized, of a XEP-0048 one."""
    conference = stanzas.element(
        "conference",
        {"name": legacy.get("name"), "autojoin": legacy.get("autojoin")},
        ns=NS_BOOKMARKS,
    )
    for field in ("nick", "password"):
        text = legacy.findtext(f"{{{NS_LEGACY}}}{field}")
        if text is not None:
            stanzas.sub(conference, field, text=text)
    return stanzas.to_bytes(conference).decode("utf-8")


def store_legacy(
    conn: XmppConnection, stanza: etree._Element, storage: etree._Element
) -> Deferred[Any]:
    """A client wrote XEP-0048 bookmarks (to private storage or the legacy PEP node): make
    the XEP-0402 node say the same, notify, and answer."""
    if storage.tag != f"{{{NS_LEGACY}}}storage":
        raise StanzaError("bad-request", "XEP-0048 bookmarks are a <storage/> element")
    factory = conn.factory
    account = conn.account
    assert account is not None
    now = factory.clock.seconds()
    wanted: dict[str, PepItem] = {}
    for legacy in storage.iterfind(f"{{{NS_LEGACY}}}conference"):
        jid = legacy.get("jid")
        if jid:
            wanted[jid] = PepItem(jid, _conference_of(legacy), now)

    def store(data: dict[pep.Key, PepNode]) -> Deferred[Any]:
        old = data.get(KEY) or NODE
        before = {item.id: item for item in old.items}
        published = [
            item
            for jid, item in wanted.items()
            if jid not in before or before[jid].payload != item.payload
        ]
        # An unchanged item keeps its publication time.
        kept = [
            before[jid] if jid in before and before[jid].payload == item.payload else item
            for jid, item in wanted.items()
        ]
        retracted = [jid for jid in before if jid not in wanted]
        node = PepNode(
            node=NS_BOOKMARKS,
            access_model=old.access_model,
            persist_items=old.persist_items,
            max_items=old.max_items,
            items=tuple(kept),
        )
        pep.check_limits(factory, data, KEY, node)

        def saved(_: Any) -> None:
            conn.iq_result(stanza)
            if not published and not retracted:
                return
            if not wanted:
                purge = stanzas.element("purge", {"node": NS_BOOKMARKS}, ns=pep.NS_PUBSUB_EVENT)
                pep.notify(factory, conn, node, purge)
            else:
                for item in published:
                    items = pep.items_element(pep.NS_PUBSUB_EVENT, NS_BOOKMARKS, [item])
                    pep.notify(factory, conn, node, items)
                for jid in retracted:
                    items = stanzas.element("items", {"node": NS_BOOKMARKS}, ns=pep.NS_PUBSUB_EVENT)
                    stanzas.sub(items, "retract", {"id": jid})
                    pep.notify(factory, conn, node, items)
            changed(factory, conn.bare_jid or "", node)

        return factory.pep.put(account, node).addCallback(saved)

    return factory.pep.get(account).addCallback(store)


def legacy_item(node: PepNode | None) -> etree._Element:
    """The legacy PEP node's one item, ``current``, in an ``<items/>`` of the event namespace."""
    items = stanzas.element("items", {"node": NS_LEGACY}, ns=pep.NS_PUBSUB_EVENT)
    stanzas.sub(items, "item", {"id": "current"}).append(legacy_storage(node))
    return items


def changed(factory: XmppFactory, owner: str, node: PepNode | None) -> None:
    """The XEP-0402 node changed: owner's resources that follow the legacy node hear of it."""
    targets = [c for c in factory.available(owner) if pep.wants(c, NS_LEGACY)]
    if not targets:
        return
    msg = pep.event_message(owner, legacy_item(node))
    data = stanzas.to_bytes(msg)
    for target in targets:
        target.send(stanzas.splice_to(data, target.jid or ""))


def read_legacy_pep(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    """Items of one's own ``storage:bookmarks`` node: the one made from XEP-0402's."""
    assert conn.account is not None

    def found(data: dict[pep.Key, PepNode]) -> None:
        result = stanzas.element("pubsub", ns=pep.NS_PUBSUB)
        items = stanzas.sub(result, "items", {"node": NS_LEGACY})
        stanzas.sub(items, "item", {"id": "current"}).append(legacy_storage(data.get(KEY)))
        conn.iq_result(stanza, result)

    return conn.factory.pep.get(conn.account).addCallback(found)


def read_private(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    """``storage:bookmarks`` from private storage: the one made from XEP-0402's."""
    from protocols.xmpp import autojoin
    from protocols.xmpp.private import NS_PRIVATE

    assert conn.account is not None
    autojoin.read(conn)

    def found(data: dict[pep.Key, PepNode]) -> None:
        query = stanzas.element("query", ns=NS_PRIVATE)
        query.append(legacy_storage(data.get(KEY)))
        conn.iq_result(stanza, query)

    return conn.factory.pep.get(conn.account).addCallback(found)
