"""Builders for the room's message stanzas: groupchat lines, subjects, invitations, notices."""

from __future__ import annotations

from typing import Any

from chatserver.core.events import Message
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element
from protocols.xmpp.stanzas import element, plain_text, sub

# The stanza id (and XEP-0359 origin-id) a client gave the message it is sending, by the
# sending connection, while the core delivers it: the reflection carries the client's id back.
sending: dict[int, tuple[str | None, str | None]] = {}
# ... and kept on the message itself (in its render cache) for what is rendered later, at the
# end of the reactor turn.
CLIENT_IDS = ("xmpp", "client-ids")


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


def groupchat_message(
    conn: Any, msg: Message, msg_id: str, origin_id: str | None = None
) -> Element:
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
    if origin_id is not None:
        sub(el, "origin-id", {"id": origin_id}, ns=ns.SID)
    return el


def live_message(conn: Any, msg: Message) -> Element:
    """A message as it is said: with the sender's own id when an XMPP client sent it."""
    ids = sending.get(id(msg.origin)) or msg.rendered.get(CLIENT_IDS)
    client_id, origin_id = ids if ids is not None else (None, None)
    return groupchat_message(conn, msg, client_id or msg.id, origin_id)


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
