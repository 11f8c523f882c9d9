"""Blocking Command (XEP-0191) over the account's one block list, which the core keeps and
applies on every protocol (:mod:`chatserver.core.blocking`).

Items are JIDs of this server's users (``name@<domain>``, any resource); the list holds the
names, so blocking ``bob@<domain>`` also blocks ``bob`` on IRC and line chat.  A change is
pushed to every resource of the account that asked for the list (XEP-0191 §3.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from protocols.xmpp import stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_BLOCKING = "urn:xmpp:blocking"
# conn.extra key: the client asked for the block list, so it gets pushes.
INTERESTED = "blocking.interested"
_push_ids = iter(range(1, 1 << 62))


def _names(conn: XmppConnection, action: etree._Element) -> list[str]:
    names = []
    for item in action.findall(f"{{{NS_BLOCKING}}}item"):
        jid = try_parse(item.get("jid"))
        if jid is None:
            raise StanzaError("jid-malformed", f"not a JID: {item.get('jid')!r}")
        if jid.local is None or jid.domain != conn.domain:
            # No federation: only this server's users can send anything to block.
            raise StanzaError("not-acceptable", "only users of this server can be blocked")
        names.append(jid.local)
    return names


def _item(conn: XmppConnection, name: str) -> etree._Element:
    return stanzas.element("item", {"jid": f"{name}@{conn.domain}"}, ns=NS_BLOCKING)


@handler("iq", "get", NS_BLOCKING)
def get(conn: XmppConnection, stanza: etree._Element) -> None:
    if etree.QName(stanzas.payload(stanza)).localname != "blocklist":
        raise StanzaError("bad-request", "ask for the blocklist")
    names = conn.service.blocks(conn.core)
    conn.extra[INTERESTED] = True
    result = stanzas.element("blocklist", ns=NS_BLOCKING)
    for name in names:
        result.append(_item(conn, name))
    conn.iq_result(stanza, result)


@handler("iq", "set", NS_BLOCKING)
def set_(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    action = stanzas.payload(stanza)
    assert action is not None
    verb = etree.QName(action).localname
    names = _names(conn, action)
    if verb == "block":
        if not names:
            raise StanzaError("bad-request", "name at least one JID to block")
        d = conn.service.block(conn.core, names)
    elif verb == "unblock":
        d = conn.service.unblock(conn.core, names or None)
    else:
        raise StanzaError("bad-request", "block or unblock")

    def done(changed: list[str]) -> None:
        conn.iq_result(stanza)
        if changed:
            _push(conn, verb, changed if names else [])

    return d.addCallback(done)


def _push(conn: XmppConnection, verb: str, names: list[str]) -> None:
    """Tell every interested resource of the account (XEP-0191 §3.3, §3.4); an empty
    ``unblock`` says the whole list is gone."""
    for other in conn.factory.resources(conn.bare_jid or ""):
        if other.jid is None or not other.extra.get(INTERESTED):
            continue
        iq = stanzas.iq("set", f"block{next(_push_ids)}", to=other.jid)
        action = stanzas.sub(iq, verb, ns=NS_BLOCKING)
        for name in names:
            action.append(_item(conn, name))
        other.send(iq)
