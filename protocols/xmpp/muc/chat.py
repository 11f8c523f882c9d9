"""Builders for the room's message stanzas: groupchat lines, subjects, invitations, notices.

A groupchat message from an XMPP occupant is the occupant's own stanza (its id, ``xml:lang``
and every extension: corrections, replies, markers, OMEMO), re-addressed from the occupant JID
and stamped with the room's ``<stanza-id/>``; the core Message carries it as a
:class:`RoomStanza`.  Messages from other protocols are built from the core Message.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from chatserver.core.events import Message, register_native
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, tail
from protocols.xmpp.muc.occupants import occupant_id
from protocols.xmpp.stanzas import NS_XML, element, plain_text, sub, to_bytes

_END = b"</message>"
XML_LANG = f"{{{NS_XML}}}lang"


@dataclass(frozen=True, slots=True)
class RoomStanza:
    """An occupant's stanza as the room reflects it, serialized without ``to``: from the
    occupant JID, with the sender's ``xml:lang``, and without a ``<stanza-id/>`` of its
    own making (XEP-0359 §4), ready for the room's."""

    data: bytes
    # The id the sender gave it, by which a later correction (XEP-0308) names it.
    client_id: str | None = None

    @classmethod
    def of(cls, stanza: Element, occupant: str, lang: str, occupant_id: str) -> RoomStanza:
        """The reflection of ``stanza`` (a copy: the stanza itself is not changed) from
        ``occupant``, with its XEP-0421 ``occupant_id``."""
        el = copy.deepcopy(stanza)
        stamp_occupant(el, occupant_id)
        for forged in el.findall(f"{{{ns.SID}}}stanza-id"):
            el.remove(forged)
        el.attrib.pop("to", None)
        el.set("from", occupant)
        if el.get(XML_LANG) is None:
            el.set(XML_LANG, lang)
        data = to_bytes(el)
        if data.endswith(b"/>"):
            data = data[:-2] + b">" + _END
        return cls(data, stanza.get("id"))

    def wire(self) -> tuple[str, dict[str, Any]]:
        """Its fields for another process of a cluster (``register_native``)."""
        return WIRE_KIND, {"data": self.data.decode("utf-8"), "client_id": self.client_id}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> RoomStanza:
        data, client_id = fields["data"], fields["client_id"]
        if not isinstance(data, str) or not (client_id is None or isinstance(client_id, str)):
            raise TypeError("not a room stanza's fields")
        raw = data.encode("utf-8")
        if not raw.startswith(b"<message") or not raw.endswith(_END):
            raise ValueError("not a message stanza")
        return cls(raw, client_id)

    def tail(self, *extra: Element) -> bytes:
        """The stanza after ``<message``, with ``extra`` children added at its end."""
        added = b"".join(to_bytes(el) for el in extra)
        return self.data[len(b"<message") : -len(_END)] + added + _END


WIRE_KIND = "xmpp.room"
register_native(WIRE_KIND, RoomStanza.from_wire)


def stamp_occupant(el: Element, occupant_id: str) -> None:
    """The room's ``<occupant-id/>`` in place of any the client put in (XEP-0421 §4)."""
    for forged in el.findall(f"{{{ns.OCCUPANT_ID}}}occupant-id"):
        el.remove(forged)
    sub(el, "occupant-id", {"id": occupant_id}, ns=ns.OCCUPANT_ID)


def room_jid(conn: Any, room: str) -> str:
    return f"{room}@{conn.muc_domain}"


def body_text(msg: Message) -> str:
    """The body of a room message: actions as ``/me`` (XEP-0245), and IRC formatting codes
    taken out with their colour numbers (XML cannot carry the codes, and leaving the numbers
    would show ``04red``), as in private messages."""
    text = plain_text(msg.text)
    if msg.kind == "action":
        return f"/me {text}"
    return text


def groupchat_message(conn: Any, msg: Message, msg_id: str) -> Element:
    """A room message from another protocol; an IRC client's ``+draft/reply`` (the room's
    msgid, which is the stanza-id) becomes a XEP-0461 reply."""
    assert msg.room is not None
    el = element(
        "message",
        {
            "from": conn.occupant_jid(msg.room, msg.source.nick),
            "type": "groupchat",
            "id": msg_id,
        },
    )
    sub(el, "body", text=body_text(msg))
    sub(el, "stanza-id", {"id": msg.id, "by": room_jid(conn, msg.room)}, ns=ns.SID)
    sub(el, "occupant-id", {"id": occupant_id(conn, msg.room, msg.source)}, ns=ns.OCCUPANT_ID)
    for key, value in msg.tags:
        if key == "+draft/reply" and value:
            sub(el, "reply", {"id": value}, ns=ns.REPLY)
    return el


def stanza_id(conn: Any, msg: Message) -> Element:
    assert msg.room is not None
    return element("stanza-id", {"id": msg.id, "by": room_jid(conn, msg.room)}, ns=ns.SID)


def live_tail(conn: Any, msg: Message) -> bytes:
    """A message as it is said, for splicing: the occupant's own stanza when an XMPP client
    sent it, else built from the core Message."""
    native = msg.native
    if isinstance(native, RoomStanza):
        return native.tail(stanza_id(conn, msg))
    return tail(groupchat_message(conn, msg, msg.id))


def subject_message(conn: Any, room: str, text: str, setter: str | None = None) -> Element:
    """The subject (always present, empty when none): from the setter, or the room on join."""
    sender = conn.occupant_jid(room, setter) if setter else room_jid(conn, room)
    el = element("message", {"from": sender, "type": "groupchat"})
    sub(el, "subject", text=text)
    return el


def status_message(conn: Any, room: str, *codes: str) -> Element:
    """A message from the room itself carrying status codes (e.g. 104: configuration changed)."""
    el = element("message", {"from": room_jid(conn, room), "type": "groupchat"})
    x = sub(el, "x", ns=ns.MUC_USER)
    for code in codes:
        sub(x, "status", {"code": code})
    return el


def invite_message(conn: Any, room: str, inviter_jid: str) -> Element:
    """A mediated invitation (XEP-0045 §7.8.2) from the room."""
    el = element("message", {"from": room_jid(conn, room)})
    x = sub(el, "x", ns=ns.MUC_USER)
    sub(x, "invite", {"from": inviter_jid})
    return el
