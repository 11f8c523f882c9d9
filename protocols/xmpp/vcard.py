"""vCard-temp (XEP-0054): one vCard per account, set by its owner and read by anyone.

The vCard is a node of kind ``vcard`` in the account's personal data
(:class:`protocols.xmpp.pep.PepData`), so it counts towards the same limits.
:func:`photo_hash` gives the XEP-0153 hash of its photo.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from chatserver.core.names import casefold
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import metadata, pep, stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
KIND = "vcard"
NODE = "vcard"


def photo_hash(vcard: etree._Element) -> str:
    """The SHA-1 (hex) of the vCard's photo, or "" when it has none (XEP-0153 §4.1)."""
    binval = vcard.findtext(f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")
    if not binval:
        return ""
    try:
        data = base64.b64decode("".join(binval.split()), validate=True)
    except (binascii.Error, ValueError):
        return ""
    return hashlib.sha1(data).hexdigest()


@handler("iq", "get", NS_VCARD)
def get(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    to = try_parse(stanza.get("to"))
    owner = conn.bare_jid or "" if to is None else to.bare
    if to is not None and to.local is None:
        raise StanzaError("service-unavailable", "the server has no vCard")
    local = owner.partition("@")[0]

    def found(data: dict[pep.Key, PepNode]) -> None:
        node = data.get((KIND, NODE))
        if node is None or not node.items:
            if casefold(owner) == casefold(conn.bare_jid or ""):
                # One's own empty vCard (XEP-0054 §3.1 lets clients start from it).
                conn.iq_result(stanza, stanzas.element("vCard", ns=NS_VCARD))
                return
            raise StanzaError("item-not-found", "no vCard")
        conn.iq_result(stanza, etree.fromstring(node.items[-1].payload))

    return conn.factory.pep.get(local).addCallback(found)


@handler("iq", "set", NS_VCARD)
def set_(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    to = try_parse(stanza.get("to"))
    if to is not None and casefold(to.bare) != casefold(conn.bare_jid or ""):
        raise StanzaError("forbidden", "only its owner sets a vCard")
    vcard = stanzas.payload(stanza)
    assert vcard is not None
    if etree.QName(vcard).localname != "vCard":
        raise StanzaError("bad-request", "a vCard is a <vCard/> element")
    factory = conn.factory
    account = conn.account
    assert account is not None
    element = copy.deepcopy(vcard)
    element.tail = None
    item = PepItem("current", stanzas.to_bytes(element).decode("utf-8"), factory.clock.seconds())

    def store(data: dict[pep.Key, PepNode]) -> Deferred[Any]:
        node = PepNode(node=NODE, kind=KIND, access_model="open", items=(item,))
        pep.check_limits(factory, data, (KIND, NODE), node)
        return factory.pep.put(account, node).addCallback(lambda _: conn.iq_result(stanza))

    d = factory.pep.get(account).addCallback(store)
    # Its nickname and a photo link are the account's metadata on other protocols.
    d.addCallback(lambda _: metadata.vcard_published(conn, element))
    return d
