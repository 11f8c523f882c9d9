"""Discovery of the room service and its rooms (XEP-0030, XEP-0045 §6), and pings to rooms."""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import BadName
from chatserver.core.names import room_key
from chatserver.core.views import RoomView
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, data_form, find, form_field
from protocols.xmpp.muc.names import display_name, forget_gone
from protocols.xmpp.muc.occupants import parse_address
from protocols.xmpp.retract import NS_MODERATE, NS_RETRACT
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import element, sub

SERVICE_FEATURES = (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.MUC, ns.PING)
# XEP-0045 §7.12: the node that asks which nick the room would give this user.
RESERVED_NICK_NODE = "x-roomuser-item"
TEXT_CONFERENCE = {"category": "conference", "type": "text"}


def room_features(room: RoomView) -> list[str]:
    flags = room.flags
    return [
        ns.DISCO_INFO,
        ns.DISCO_ITEMS,
        ns.MUC,
        ns.MUC_STABLE_ID,
        ns.MUC_SELF_PING,
        ns.OCCUPANT_ID,
        ns.SID,
        ns.PING,
        ns.MAM,
        ns.MAM_EXTENDED,
        # Retraction (XEP-0424) and moderation (XEP-0425): protocols.xmpp.retract.
        NS_RETRACT,
        NS_MODERATE,
        "muc_hidden" if "secret" in flags else "muc_public",
        "muc_membersonly" if "invite_only" in flags else "muc_open",
        "muc_persistent" if room.registered else "muc_temporary",
        "muc_moderated" if "moderated" in flags else "muc_unmoderated",
        "muc_passwordprotected" if room.key is not None else "muc_unsecured",
        "muc_nonanonymous",
    ]


def addressed(conn: Any, iq: Element) -> tuple[RoomView | None, str | None]:
    """(room, occupant nick) an iq is addressed to; (None, None) for the service itself."""
    address = parse_address(iq.get("to"))
    if address is None:
        return None, None
    try:
        room = conn.service.get_room(room_key(address.room))
    except BadName:
        room = None
    if room is None:
        raise StanzaError("item-not-found", "no such room")
    return room, address.nick


@handler("iq", "get", ns.DISCO_INFO, service="muc")
def on_disco_info(conn: Any, iq: Element) -> None:
    room, nick = addressed(conn, iq)
    if nick is not None:
        # Occupants are users of any protocol: their own address answers for them.
        raise StanzaError("service-unavailable")
    asked = find(iq, ns.DISCO_INFO, "query")
    node = asked.get("node") if asked is not None else None
    query = element("query", ns=ns.DISCO_INFO)
    if room is not None and node == RESERVED_NICK_NODE:
        query.set("node", node)
        nick = conn.user.nick if conn.user is not None else None
        sub(query, "identity", {**TEXT_CONFERENCE, "name": nick})
    elif node:
        raise StanzaError("item-not-found", "no such node")
    elif room is None:
        sub(query, "identity", {**TEXT_CONFERENCE, "name": "Chat rooms"})
        for feature in SERVICE_FEATURES:
            sub(query, "feature", {"var": feature})
    else:
        room_info(room, query)
    conn.iq_result(iq, query)


def room_info(room: RoomView, query: Element) -> None:
    sub(query, "identity", {**TEXT_CONFERENCE, "name": display_name(room)})
    for feature in room_features(room):
        sub(query, "feature", {"var": feature})
    form = data_form(query, ns.MUC_ROOMINFO)
    form_field(form, "muc#roominfo_description", room.topic, label="Description")
    form_field(form, "muc#roominfo_subject", room.topic, label="Subject")
    form_field(form, "muc#roominfo_occupants", str(len(room.members)), label="Occupants")
    form_field(
        form,
        "muc#roominfo_subjectmod",
        "0" if "topic_lock" in room.flags else "1",
        type_="boolean",
        label="Occupants may change the subject",
    )
    form_field(form, "muc#roomconfig_roomname", display_name(room), label="Name")


@handler("iq", "get", ns.DISCO_ITEMS, service="muc")
def on_disco_items(conn: Any, iq: Element) -> None:
    room, nick = addressed(conn, iq)
    if nick is not None:
        raise StanzaError("service-unavailable")
    query = element("query", ns=ns.DISCO_ITEMS)
    if room is None:
        forget_gone(lambda key: conn.service.room_by_key(key) is not None)
        # Secret rooms are listed to their members and server operators (the core's rule).
        for room in conn.service.visible_rooms(conn.user):
            jid = f"{room.name}@{conn.muc_domain}"
            sub(query, "item", {"jid": jid, "name": display_name(room)})
    # A room lists no items: its occupants are seen by joining.
    conn.iq_result(iq, query)


@handler("iq", "get", ns.PING, service="muc")
def on_ping(conn: Any, iq: Element) -> None:
    """Pings to the service or a room; to one's own occupant JID, whether one is still in
    (XEP-0410: clients use it to find out whether they were dropped from a room)."""
    room, nick = addressed(conn, iq)
    if room is not None and nick is not None:
        if conn.user is None or conn.user not in room.members:
            raise StanzaError("not-acceptable", "you are not in this room", "cancel")
        if room.find_member(nick) is None:
            raise StanzaError("item-not-found", f"{nick} is not in this room")
    conn.iq_result(iq)
