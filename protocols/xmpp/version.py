"""XEP-0092 software version of the server (not of users: their clients may answer that)."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from lxml import etree

from protocols.xmpp import stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import NS_VERSION

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NAME = "chatserver"


def server_version() -> str:
    try:
        return metadata.version("chatserver")
    except metadata.PackageNotFoundError:
        return "unknown"


@handler("iq", "get", NS_VERSION)
def version(conn: XmppConnection, stanza: etree._Element) -> None:
    to = try_parse(stanza.get("to"))
    if to is not None and to.local is not None:
        # A user's bare JID: only the user's client knows its version (RFC 6121 §8.5.3.1).
        raise StanzaError("service-unavailable")
    query = stanzas.element("query", ns=NS_VERSION)
    stanzas.sub(query, "name", text=NAME)
    stanzas.sub(query, "version", text=server_version())
    conn.iq_result(stanza, query)
