"""Private XML storage (XEP-0049): XML a client keeps on the server, one element per namespace,
readable by its owner alone.

Each namespace is a node of kind ``private`` in the account's personal data
(:class:`protocols.xmpp.pep.PepData`), so it counts towards the same limits.  XEP-0048
bookmarks (``storage:bookmarks``) are the exception: :mod:`protocols.xmpp.bookmarks` keeps
them as XEP-0402's, so that clients of either kind see the same rooms.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from chatserver.core.names import casefold
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import bookmarks, pep, stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_PRIVATE = "jabber:iq:private"
KIND = "private"


def _check(conn: XmppConnection, stanza: etree._Element) -> tuple[str, etree._Element]:
    """The account and the one element of the query, or the XEP-0049 errors."""
    to = try_parse(stanza.get("to"))
    if to is not None and to.local is None:
        raise StanzaError("service-unavailable", "the server keeps no private data")
    if to is not None and casefold(to.bare) != casefold(conn.bare_jid or ""):
        raise StanzaError("forbidden", "private storage is your own")
    query = stanzas.payload(stanza)
    assert query is not None
    children = [c for c in query if isinstance(c.tag, str)]
    if len(children) != 1:
        raise StanzaError("not-acceptable", "one element per request")
    child = children[0]
    ns = etree.QName(child).namespace
    if ns is None or ns == NS_PRIVATE or ns == stanzas.NS_CLIENT:
        raise StanzaError("not-acceptable", "the element needs a namespace of its own")
    assert conn.account is not None
    return conn.account, child


@handler("iq", "get", NS_PRIVATE)
def get(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    account, child = _check(conn, stanza)
    ns = etree.QName(child).namespace or ""
    if ns == bookmarks.NS_LEGACY:
        return bookmarks.read_private(conn, stanza)

    def found(data: dict[pep.Key, PepNode]) -> None:
        node = data.get((KIND, ns))
        query = stanzas.element("query", ns=NS_PRIVATE)
        if node is not None and node.items:
            query.append(etree.fromstring(node.items[-1].payload))
        else:
            # Nothing stored: the empty element asked for (XEP-0049 §2.3).
            stanzas.sub(query, etree.QName(child).localname, ns=ns)
        conn.iq_result(stanza, query)

    return conn.factory.pep.get(account).addCallback(found)


@handler("iq", "set", NS_PRIVATE)
def set_(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    account, child = _check(conn, stanza)
    ns = etree.QName(child).namespace or ""
    if ns == bookmarks.NS_LEGACY:
        return bookmarks.store_legacy(conn, stanza, child)
    factory = conn.factory
    element = copy.deepcopy(child)
    element.tail = None
    item = PepItem("current", stanzas.to_bytes(element).decode("utf-8"), factory.clock.seconds())

    def store(data: dict[pep.Key, PepNode]) -> Deferred[Any]:
        node = PepNode(node=ns, kind=KIND, access_model="whitelist", items=(item,))
        pep.check_limits(factory, data, (KIND, ns), node)
        return factory.pep.put(account, node).addCallback(lambda _: conn.iq_result(stanza))

    return factory.pep.get(account).addCallback(store)
