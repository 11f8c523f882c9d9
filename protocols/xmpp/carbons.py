"""Message carbons (XEP-0280): a resource sees the private messages its user sends elsewhere.

Every connection of a user already gets what is sent to the user (the core delivers to all of
them), so only the *sent* direction needs copies: a private message the user sends from one
connection, on any protocol, is copied to each of its XMPP resources that enabled carbons,
wrapped in ``<sent>`` around the forwarded message (XEP-0297).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from chatserver.core.events import Message
from protocols.xmpp import stanzas
from protocols.xmpp.jid import address_of, guest_jid, user_jid
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
_ENABLED = "carbons"


@handler("iq", "set", NS_CARBONS)
def enable_or_disable(conn: XmppConnection, stanza: etree._Element) -> None:
    payload = stanzas.payload(stanza)
    name = etree.QName(payload).localname if payload is not None else ""
    if name == "enable":
        conn.extra[_ENABLED] = True
    elif name == "disable":
        conn.extra.pop(_ENABLED, None)
    else:
        raise StanzaError("bad-request", "enable or disable")
    conn.iq_result(stanza)


def enabled(conn: XmppConnection) -> bool:
    return bool(conn.extra.get(_ENABLED))


def sent_copy(conn: XmppConnection, event: Message, body: str) -> etree._Element:
    """The carbon of a private message this connection's user sent from another connection."""
    own = conn.bare_jid or address_of(event.source, conn.domain)
    outer = stanzas.element("message", {"from": own, "to": conn.jid, "type": "chat"})
    sent = stanzas.sub(outer, "sent", ns=NS_CARBONS)
    forwarded = stanzas.sub(sent, "forwarded", ns=NS_FORWARD)
    inner = stanzas.element(
        "message",
        {
            "from": address_of(event.source, conn.domain),
            "to": user_jid(event.target_account, conn.domain)
            if event.target_account is not None
            else guest_jid(event.target or "", conn.domain),
            "type": "chat",
            "id": event.id,
        },
        ns=stanzas.NS_CLIENT,
    )
    stanzas.sub(inner, "body", text=body)
    from protocols.xmpp.render import archived

    if archived(conn, event, False):
        # Kept in the sender's archive too: the id lets its clients match the copy with MAM.
        stanzas.sub(inner, "stanza-id", {"id": event.id, "by": own}, ns=stanzas.NS_STANZA_ID)
    forwarded.append(inner)
    return outer
