"""Service discovery (XEP-0030) of the server and of its users' bare JIDs.

The room service and its rooms answer for themselves (the ``muc`` handlers); the server only
lists the room service among its items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from protocols.xmpp import bookmarks, pep, router, stanzas, upload
from protocols.xmpp.adhoc import NS_COMMANDS, list_commands
from protocols.xmpp.blocking import NS_BLOCKING
from protocols.xmpp.caps import NS_CAPS
from protocols.xmpp.carbons import NS_CARBONS
from protocols.xmpp.jid import GUEST_MARK, local_user, try_parse
from protocols.xmpp.mam import NS_MAM, NS_MAM_EXTENDED
from protocols.xmpp.private import NS_PRIVATE
from protocols.xmpp.retract import NS_RETRACT
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import (
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_REGISTER,
    NS_ROSTER,
    NS_VERSION,
)
from protocols.xmpp.vcard import NS_VCARD

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

SERVER_NAME = "chatserver"
SERVER_FEATURES = (
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    NS_ROSTER,
    NS_CARBONS,
    NS_BLOCKING,
    NS_CAPS,
    NS_PRIVATE,
    NS_VCARD,
    NS_COMMANDS,
    NS_RETRACT,
)
# An account is a PEP service (XEP-0163 §6): clients look here for publish-options.
ACCOUNT_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, *pep.FEATURES)
# Asked of one's own bare JID: the account's archive (XEP-0313 §6).
OWN_ACCOUNT_FEATURES = (*ACCOUNT_FEATURES, NS_MAM, NS_MAM_EXTENDED, *bookmarks.FEATURES)


def _query(ns: str, node: str | None) -> etree._Element:
    return stanzas.element("query", {"node": node}, ns=ns)


def _features(query: etree._Element, names: tuple[str, ...] | list[str]) -> None:
    for name in sorted(set(names)):
        stanzas.sub(query, "feature", {"var": name})


@handler("iq", "get", NS_DISCO_INFO)
def info(conn: XmppConnection, stanza: etree._Element) -> None:
    node = _node(stanza)
    to = try_parse(stanza.get("to"))
    query = _query(NS_DISCO_INFO, node)
    if to is not None and to.local is None and to.domain == upload.service_domain(conn.factory):
        upload.disco_info(conn.factory, query)
    elif to is None or to.local is None:
        server_identity_and_features(conn.factory, query)
    else:
        if not _known_user(conn, to.bare):
            raise StanzaError("service-unavailable")
        # A guest's address (``~nick``) is no account's (XEP-0030 registry: account/anonymous).
        kind = "anonymous" if to.local.startswith(GUEST_MARK) else "registered"
        stanzas.sub(query, "identity", {"category": "account", "type": kind})
        stanzas.sub(query, "identity", {"category": "pubsub", "type": "pep"})
        own = to.bare == conn.bare_jid and conn.user is not None and conn.user.account
        _features(query, OWN_ACCOUNT_FEATURES if own else ACCOUNT_FEATURES)
    conn.iq_result(stanza, query)


def server_features(factory: XmppFactory) -> tuple[str, ...]:
    """The features the server names for itself in disco#info."""
    if factory.registration_open():
        return (*SERVER_FEATURES, *pep.FEATURES, NS_REGISTER)
    return (*SERVER_FEATURES, *pep.FEATURES)


def server_identity_and_features(factory: XmppFactory, query: etree._Element) -> None:
    """What the server says of itself in disco#info (and hashes into its caps ``ver``)."""
    stanzas.sub(query, "identity", {"category": "server", "type": "im", "name": SERVER_NAME})
    # Clients read PEP support from the server's features too (Profanity: publish-options).
    stanzas.sub(query, "identity", {"category": "pubsub", "type": "pep"})
    _features(query, server_features(factory))


@handler("iq", "get", NS_DISCO_ITEMS)
def items(conn: XmppConnection, stanza: etree._Element) -> None:
    node = _node(stanza)
    to = try_parse(stanza.get("to"))
    query = _query(NS_DISCO_ITEMS, node)
    if (to is None or to.local is None) and node == NS_COMMANDS:
        list_commands(conn, query)
    elif to is None or to.local is None:
        if router.registered("muc"):
            stanzas.sub(query, "item", {"jid": conn.muc_domain, "name": "Chat rooms"})
        uploads = upload.service_domain(conn.factory)
        if uploads is not None and (to is None or to.domain == conn.domain):
            stanzas.sub(query, "item", {"jid": uploads, "name": upload.NAME})
    elif not _known_user(conn, to.bare):
        raise StanzaError("service-unavailable")
    conn.iq_result(stanza, query)


def _node(stanza: etree._Element) -> str | None:
    query = stanzas.payload(stanza)
    node = query.get("node") if query is not None else None
    if node == NS_COMMANDS and etree.QName(query).namespace == NS_DISCO_ITEMS:
        # The server's ad-hoc commands (XEP-0050 §2.2).
        return node
    if node:
        raise StanzaError("item-not-found", "no such node")
    return None


def _known_user(conn: XmppConnection, bare: str) -> bool:
    """Ourselves, or a user online now (the server answers for a bare JID on its behalf)."""
    return bare == conn.bare_jid or local_user(conn.service, bare.partition("@")[0]) is not None


@handler("iq", "set", NS_DISCO_INFO)
@handler("iq", "set", NS_DISCO_ITEMS)
@handler("iq", "set", NS_VERSION)
@handler("iq", "set", NS_PING)
def read_only(conn: XmppConnection, stanza: etree._Element) -> None:
    """Namespaces this server knows but that have nothing to set (RFC 6120 §8.3.3.3)."""
    raise StanzaError("feature-not-implemented")
