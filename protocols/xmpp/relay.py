"""One-to-one stanzas relayed whole, from one XMPP user to another (RFC 6121 §8.5).

An XMPP recipient of an XMPP sender gets the sender's stanza as it was written: its ``id``,
its ``<thread>`` and every extension child (OMEMO, receipts, markers, corrections, replies,
reactions, chat states, origin-id), with only what the server stamps changed: ``from`` (the
sender's full JID) and, when the stanza has none, ``xml:lang`` (the sender's stream default,
RFC 6120 §4.7.4).  ``to`` stays the address the sender used, as RFC 6121 §8.5 routes it.  The
stanza is serialized once into a :class:`Relay`: every XMPP connection that should see it gets
the same bytes, and carbons (XEP-0280) wrap them.

A message with a body also goes through the core (``Message.native`` carries the Relay), so
IRC and line-chat users, history and moderation see it once; a message without one (chat
states, reactions, receipts, markers) is passed on here to XMPP clients, and what other
protocols can show of it goes to them as tags (:mod:`protocols.xmpp.tags`).
Which connections get what is decided by :func:`deliver`, the one rule for both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from chatserver.core.events import StoredNative, register_native
from protocols.xmpp import stanzas

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"

_MESSAGE = b"<message "
XML_LANG = f"{{{stanzas.NS_XML}}}lang"


@dataclass(frozen=True, slots=True)
class Relay:
    """A stanza on its way from one user to another.

    ``data`` is the stanza serialized; ``to`` the address the sender used (normalized);
    ``sender`` the sending resource's full JID.  ``carbons`` is False for
    messages that must not be copied to the user's other resources (XEP-0280 §7:
    ``<private/>``, ``<no-copy/>``; private messages through a room).  ``per_resource``: a
    private message through a room, from the sender's occupant JID; ``data`` has no ``to``,
    and each of the recipient's resources gets its own full JID spliced in.
    """

    data: bytes
    to: str
    sender: str
    carbons: bool = True
    per_resource: bool = False

    @property
    def to_resource(self) -> str:
        return self.to.partition("/")[2]

    def wire(self) -> tuple[str, dict[str, Any]]:
        """Its fields for another process of a cluster (``register_native``)."""
        return WIRE_KIND, {
            "data": self.data.decode("utf-8"),
            "to": self.to,
            "sender": self.sender,
            "carbons": self.carbons,
            "per_resource": self.per_resource,
        }

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> Relay:
        data, to, sender = fields["data"], fields["to"], fields["sender"]
        carbons, per_resource = fields["carbons"], fields["per_resource"]
        if not all(isinstance(x, str) for x in (data, to, sender)) or not all(
            isinstance(x, bool) for x in (carbons, per_resource)
        ):
            raise TypeError("not a relay's fields")
        if not data.startswith("<message "):
            raise ValueError("not a message stanza")
        return cls(data.encode("utf-8"), to, sender, carbons, per_resource)


WIRE_KIND = "xmpp.relay"
register_native(WIRE_KIND, Relay.from_wire)


def strip_server_stamps(stanza: etree._Element) -> None:
    """Take out what only a server may stamp: a client's own ``<stanza-id/>`` would
    otherwise pass for this server's (XEP-0359 §4)."""
    for child in stanza.findall(f"{{{stanzas.NS_STANZA_ID}}}stanza-id"):
        stanza.remove(child)


def of(stanza: etree._Element, sender: str, lang: str, *, sender_as: str | None = None) -> Relay:
    """The Relay of a message from ``sender`` (its ``from`` already stamped) on a stream
    whose default language is ``lang``.  ``sender_as``: an occupant JID the message comes
    from instead (a private message through a room, XEP-0045 §7.5)."""
    strip_server_stamps(stanza)
    if stanza.get(XML_LANG) is None:
        stanza.set(XML_LANG, lang)
    if sender_as is not None:
        stanza.set("from", sender_as)
        stanza.attrib.pop("to", None)
        return Relay(stanzas.to_bytes(stanza), "", sender, carbons=False, per_resource=True)
    to = stanza.get("to", "")
    private = stanza.find(f"{{{NS_CARBONS}}}private")
    if private is not None:
        # XEP-0280 §7: a note to the sender's server, taken off before the stanza goes on.
        stanza.remove(private)
    no_copy = private is not None or stanza.find(f"{{{NS_HINTS}}}no-copy") is not None
    type_ = stanzas.type_of(stanza)
    # XEP-0280 §6: chat messages, and normal ones that say something.
    copyable = type_ == "chat" or (type_ == "normal" and stanza.find("body") is not None)
    copies = copyable and not no_copy
    return Relay(stanzas.to_bytes(stanza), to, sender, copies)


def deliver(
    conn: XmppConnection, relay: Relay, recipient: bool, archive_id: str | None = None
) -> None:
    """This connection's copy of ``relay``, if it gets one; ``recipient`` says whether the
    connection's user is the one the message is for (else it is the sender's).
    ``archive_id``: the message is kept in this user's archive under that id, which the copy
    carries as a ``<stanza-id/>`` by the user's bare JID (XEP-0359, XEP-0313 §5.1.2), in the
    message itself or in the message a carbon forwards.

    * The recipient's resources: all of them for a bare JID; only the named one for a full
      JID that is online (RFC 6121 §8.5.3.1; else as for the bare JID), and a ``<received/>``
      carbon for the others that enabled carbons.
    * The sender's other resources: a ``<sent/>`` carbon, if they enabled carbons.
    """
    own = conn.bare_jid
    jid = conn.jid
    if own is None or jid is None:
        return
    data = relay.data if archive_id is None else with_stanza_id(relay.data, archive_id, own)
    if relay.per_resource:
        if recipient:
            conn.send(stanzas.splice_to(data, jid))
        return
    if recipient:
        resource = relay.to_resource
        if not resource or resource == conn.resource:
            conn.send(data)
        elif conn.factory.session(own, resource) is None:
            # Addressed to a resource that is gone: delivered as to the bare JID.
            conn.send(data)
        elif relay.carbons and _carbons(conn):
            conn.send(_carbon(conn, data, "received"))
        return
    if jid != relay.sender and relay.carbons and _carbons(conn):
        conn.send(_carbon(conn, data, "sent"))


def with_stanza_id(data: bytes, msgid: str, by: str) -> bytes:
    """A serialized message with a ``<stanza-id/>`` (XEP-0359) added as its last child."""
    sid = stanzas.to_bytes(
        stanzas.element("stanza-id", {"id": msgid, "by": by}, ns=stanzas.NS_STANZA_ID)
    )
    if data.endswith(b"/>"):
        return data[:-2] + b">" + sid + b"</message>"
    end = data.rindex(b"</")
    return data[:end] + sid + data[end:]


def _carbons(conn: XmppConnection) -> bool:
    from protocols.xmpp import carbons

    return carbons.enabled(conn)


# Stored stanzas were serialized by this server; the parser still takes no entities.
_STORED = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def stored(native: object, *, forwarded_form: bool = False) -> etree._Element | None:
    """The sender's stanza that a message kept (live or from the archive), or None for a
    message that came from another protocol.  ``forwarded_form``: in ``jabber:client``, to
    go inside a ``<forwarded/>``; else plain, as stanzas on the stream are."""
    if not isinstance(native, (Relay, StoredNative)) or not native.data.startswith(_MESSAGE):
        return None
    data = forwarded(native.data) if forwarded_form else native.data
    try:
        return etree.fromstring(data, _STORED)
    except etree.XMLSyntaxError:
        return None


def forwarded(data: bytes) -> bytes:
    """A relayed stanza as XEP-0297 forwards it: whole, with its ``to``, in ``jabber:client``."""
    return b"<message xmlns='jabber:client' " + data[len(_MESSAGE) :]


def _carbon(conn: XmppConnection, data: bytes, direction: str) -> bytes:
    """The ``<sent/>`` or ``<received/>`` copy of a relayed stanza for this resource
    (XEP-0280)."""
    outer = stanzas.to_bytes(
        stanzas.element("message", {"from": conn.bare_jid, "to": conn.jid, "type": "chat"})
    )
    inner = (
        f"<{direction} xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>".encode()
        + forwarded(data)
        + f"</forwarded></{direction}>".encode()
    )
    return outer[:-2] + b">" + inner + b"</message>"
