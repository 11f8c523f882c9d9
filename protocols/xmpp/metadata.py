"""XMPP's nicknames and avatars as the core's metadata (IRC ``draft/metadata-2``), both ways.

* A nickname published to PEP (XEP-0172, node ``http://jabber.org/protocol/nick``) or a
  vCard's ``NICKNAME`` (XEP-0054) is the account's ``display-name``; an avatar (XEP-0084)
  whose metadata names an HTTP ``url``, or a vCard ``PHOTO`` given as an ``EXTVAL`` link, is
  its ``avatar``.  Published live they change the metadata at once; what the account had published
  before is taken when a session of it first sends presence, unless the metadata already has a
  value.  Only nodes others may read count (not ``whitelist`` ones).
* A ``display-name`` set on another protocol reaches XMPP users who share a room with the user
  as a XEP-0172 nickname event from the user's bare JID (for resources whose capabilities ask
  for nickname notifications).  It is not written into the account's PEP node, and an avatar
  set on IRC has no XMPP form (XEP-0084 carries the image, not a link).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from chatserver.core.errors import ChatError
from chatserver.core.events import MetadataChange
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import pep, stanzas
from protocols.xmpp.jid import user_jid

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_NICK = "http://jabber.org/protocol/nick"
NS_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_VCARD = "vcard-temp"

DISPLAY_NAME = "display-name"
AVATAR = "avatar"


def value_of(node: str, payload: etree._Element) -> tuple[str, str | None] | None:
    """(metadata key, value or None for none) that a PEP item says, or None for other nodes."""
    if node == NS_NICK:
        return DISPLAY_NAME, (payload.text or "").strip() or None
    if node == NS_AVATAR_METADATA:
        for info in payload.iterfind(f"{{{NS_AVATAR_METADATA}}}info"):
            url = info.get("url")
            if url and url.startswith(("https://", "http://")):
                return AVATAR, url
        # An avatar without a link (or none at all): nothing IRC could show.
        return AVATAR, None
    return None


def vcard_values(vcard: etree._Element) -> dict[str, str]:
    """A vCard's nickname and photo link (``PHOTO/EXTVAL``), as metadata."""
    out: dict[str, str] = {}
    nick = (vcard.findtext(f"{{{NS_VCARD}}}NICKNAME") or "").strip()
    if nick:
        out[DISPLAY_NAME] = nick
    url = (vcard.findtext(f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}EXTVAL") or "").strip()
    if url.startswith(("https://", "http://")):
        out[AVATAR] = url
    return out


def _set(conn: XmppConnection, key: str, value: str | None) -> None:
    if conn.core is None:
        return
    try:
        conn.service.set_metadata(conn.core, key, value)
    except ChatError:
        # Too long for metadata, say: XMPP keeps it; other protocols do without.
        return


def published(conn: XmppConnection, node: PepNode, payload: etree._Element) -> None:
    """A PEP publication of the user's: the metadata it stands for, changed."""
    if node.access_model == "whitelist" or conn.core is None:
        return
    found = value_of(node.node, payload)
    if found is not None:
        _set(conn, *found)


def vcard_published(conn: XmppConnection, vcard: etree._Element) -> None:
    """A vCard set (vCards are readable by anyone): its nickname and photo link."""
    if conn.core is None:
        return
    for key, value in vcard_values(vcard).items():
        _set(conn, key, value)


def first_presence(conn: XmppConnection) -> Any:
    """Take what the account published before into the metadata, where that has nothing."""
    if conn.account is None or conn.core is None:
        return None
    core = conn.core

    def seed(data: dict[Any, PepNode]) -> None:
        found: dict[str, str] = {}
        vcard = data.get(("vcard", "vcard"))
        if vcard is not None and vcard.items:
            found.update(vcard_values(etree.fromstring(vcard.items[-1].payload)))
        # PEP's nickname and avatar, where published, over the vCard's.
        for name in (NS_NICK, NS_AVATAR_METADATA):
            node = data.get(("pep", name))
            if node is None or not node.items or node.access_model == "whitelist":
                continue
            pair = value_of(name, etree.fromstring(node.items[-1].payload))
            if pair is not None and pair[1] is not None:
                found[pair[0]] = pair[1]
        have = conn.service.own_metadata(core)
        for key, value in found.items():
            if key not in have:
                _set(conn, key, value)

    d = conn.factory.pep.get(conn.account).addCallback(seed)
    d.addErrback(lambda f: None)
    return d


def render(conn: XmppConnection, event: MetadataChange) -> None:
    """A display name set on another protocol, as a nickname event (XEP-0172)."""
    if (
        event.key != DISPLAY_NAME
        or event.room is not None
        or getattr(event.origin, "protocol", None) == "xmpp"
        or event.who.account is None
        or event.who.nick != event.target
        or not pep.wants(conn, NS_NICK)
    ):
        return
    nick = stanzas.element("nick", ns=NS_NICK, text=event.value or "")
    item = PepItem("current", stanzas.to_bytes(nick).decode("utf-8"), event.ts)
    items = pep.items_element(pep.NS_PUBSUB_EVENT, NS_NICK, [item])
    msg = pep.event_message(user_jid(event.who.account, conn.domain), items)
    msg.set("to", conn.jid or "")
    conn.send(msg)
