"""Client state indication (XEP-0352, ``urn:xmpp:csi:0``): quiet for phones in pockets.

A client that says ``<inactive/>`` gets only what is urgent; presence updates, chat states,
receipts and room chatter that does not name the user are held back, in order, and sent all
at once before the next urgent stanza, when the client says ``<active/>`` again, or when
``[xmpp] csi_max_held`` of them are waiting.  What is urgent follows Prosody's
``mod_csi_simple``: a message with a body (in a room only when it mentions the user's nick),
a subject, an invitation, an error, a carbon of a sent message, an IQ, a presence
subscription request.

A presence held back is replaced by a later one from the same address (only the latest
says anything), so a busy room's comings and goings cost an idle phone one presence per
occupant rather than one per change.

The classification reads the serialized stanza (what the renderers produce once for every
recipient) with a few byte searches; no stanza is parsed again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lxml import etree

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_CSI = "urn:xmpp:csi:0"

_HEAD = re.compile(rb"<(message|presence|iq)\b[^>]*>|<(message|presence|iq)\b[^>]*/>")
_TYPE = re.compile(rb"""\stype=(?:'([^']*)'|"([^"]*)")""")
_FROM = re.compile(rb"""\sfrom=(?:'([^']*)'|"([^"]*)")""")
_BODY = re.compile(rb"<body\b[^>]*>(.*?)</body>", re.S)
_QUIET_PRESENCE = (None, b"unavailable", b"error")


class Held:
    """Stanzas held for an inactive client, in order; a newer presence from the same address
    takes the place of the older one."""

    __slots__ = ("items", "live", "presence_at")

    def __init__(self) -> None:
        self.items: list[bytes | None] = []
        self.presence_at: dict[bytes, int] = {}
        self.live = 0

    def add(self, data: bytes) -> None:
        key = _presence_from(data)
        if key is not None:
            earlier = self.presence_at.get(key)
            if earlier is not None:
                self.items[earlier] = None
                self.live -= 1
            self.presence_at[key] = len(self.items)
        self.items.append(data)
        self.live += 1

    def take(self) -> list[bytes]:
        out = [data for data in self.items if data is not None]
        self.items = []
        self.presence_at = {}
        self.live = 0
        return out


def _presence_from(data: bytes) -> bytes | None:
    if not data.startswith(b"<presence"):
        return None
    head = _HEAD.match(data)
    found = _FROM.search(head.group()) if head is not None else None
    if found is None:
        return None
    return found.group(1) if found.group(1) is not None else found.group(2)


def handle(conn: XmppConnection, el: etree._Element) -> None:
    name = etree.QName(el).localname
    if name == "inactive":
        conn.set_inactive(True)
    elif name == "active":
        conn.set_inactive(False)
    else:
        conn.stream_error("unsupported-stanza-type", None)


def urgent(conn: XmppConnection, data: bytes) -> bool:
    """Whether a stanza must reach an inactive client now."""
    head = _HEAD.match(data)
    if head is None:
        return True
    kind = head.group(1) or head.group(2)
    found = _TYPE.search(head.group())
    type_ = (found.group(1) if found.group(1) is not None else found.group(2)) if found else None
    if kind == b"presence":
        return type_ not in _QUIET_PRESENCE
    if kind != b"message":
        return True
    if type_ == b"headline":
        return False
    if type_ == b"error" or (b"urn:xmpp:carbons:2" in data and b"<sent" in data):
        return True
    if b"<subject" in data or b"<invite" in data or b"jabber:x:conference" in data:
        return True
    body = _BODY.search(data)
    if body is None:
        return False
    if type_ != b"groupchat":
        return True
    return _mentions(conn, body.group(1))


def _mentions(conn: XmppConnection, body: bytes) -> bool:
    text = body.lower()
    for name in (conn.account, conn.user.nick if conn.user is not None else None):
        if name and name.lower().encode("utf-8") in text:
            return True
    return False
