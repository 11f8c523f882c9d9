"""XEP-0199 ping: the server answers pings to itself and to its users' bare JIDs.

The other direction (the server pinging an idle client) lives in the connection's idle timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from protocols.xmpp.router import handler
from protocols.xmpp.stanzas import NS_PING

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection


@handler("iq", "get", NS_PING)
def ping(conn: XmppConnection, stanza: etree._Element) -> None:
    conn.iq_result(stanza)
