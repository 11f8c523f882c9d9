"""Room configuration through muc#owner (XEP-0045 §10): the form, instant rooms, settings.

Each field maps to a core room mode; a submitted form becomes one ``set_mode`` call (plus the
topic and the registration when those change).  An empty submitted form is the instant room
of §10.1.2: rooms are never locked, so it changes nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatserver.core.events import ModeItem
from chatserver.core.views import RoomView
from protocols.costs import FANOUT
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.admin import target_room
from protocols.xmpp.muc.build import Element, data_form, find, form_field, form_values
from protocols.xmpp.muc.names import display_name, set_display_name
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import element, sub

F = "muc#roomconfig_"
# Boolean fields that are room flags: field -> (flag, whether true means the flag is set).
FLAG_FIELDS = {
    F + "moderatedroom": ("moderated", True),
    F + "membersonly": ("invite_only", True),
    F + "publicroom": ("secret", False),
    F + "changesubject": ("topic_lock", False),
}
MAXUSERS_OPTIONS = ["10", "20", "30", "50", "100", "none"]


FLAG_LABELS = {
    "moderated": "Moderated (only voiced occupants speak)",
    "invite_only": "Members only (invite only)",
    "secret": "Public (listed)",
    "topic_lock": "Occupants may change the subject",
}


def config_form(room: RoomView, parent: Element) -> Element:
    form = data_form(parent, ns.MUC_ROOMCONFIG, "form")
    sub(form, "title", text=f"Configuration of {room.name}")
    form_field(form, F + "roomname", display_name(room), type_="text-single", label="Name")
    form_field(form, F + "roomdesc", room.topic, type_="text-single", label="Description (topic)")
    form_field(
        form, F + "persistentroom", _bool(room.registered), type_="boolean", label="Persistent"
    )
    for var, (flag, when_set) in FLAG_FIELDS.items():
        value = _bool((flag in room.flags) == when_set)
        form_field(form, var, value, type_="boolean", label=FLAG_LABELS[flag])
    protected = _bool(room.key is not None)
    form_field(
        form, F + "passwordprotectedroom", protected, type_="boolean", label="Password protected"
    )
    form_field(form, F + "roomsecret", room.key or "", type_="text-private", label="Password")
    limit = str(room.limit) if room.limit is not None else "none"
    options = MAXUSERS_OPTIONS if limit in MAXUSERS_OPTIONS else [limit, *MAXUSERS_OPTIONS]
    form_field(
        form, F + "maxusers", limit, type_="list-single", label="Maximum occupants", options=options
    )
    # Every occupant's JID is its public nick@domain: the room is non-anonymous.
    form_field(
        form,
        F + "whois",
        "anyone",
        type_="list-single",
        label="Who may see occupants' JIDs",
        options=["anyone"],
    )
    return form


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _truth(values: list[str]) -> bool:
    return bool(values) and values[0].strip().lower() in ("1", "true")


@handler("iq", "get", ns.MUC_OWNER, service="muc")
def on_owner_get(conn: Any, iq: Element) -> None:
    room = target_room(conn, iq)
    query = element("query", ns=ns.MUC_OWNER)
    config_form(room, query)
    conn.iq_result(iq, query)


@handler("iq", "set", ns.MUC_OWNER, service="muc", per_delivery=FANOUT)
def on_owner_set(conn: Any, iq: Element) -> Deferred | None:
    room = target_room(conn, iq)
    query = find(iq, ns.MUC_OWNER, "query")
    if query is None:
        raise StanzaError("bad-request", "no query")
    if find(query, ns.MUC_OWNER, "destroy") is not None:
        raise StanzaError("feature-not-implemented", "a room ends when its last member leaves")
    form = find(query, ns.DATA, "x")
    if form is None or form.get("type") == "cancel":
        # Cancelling the form of a new room leaves it as it is: rooms are never locked.
        conn.iq_result(iq)
        return None
    if form.get("type") != "submit":
        raise StanzaError("bad-request", "submit the form")
    pending = apply_form(conn, room, form_values(form))
    if pending is None:
        conn.iq_result(iq)
        return None
    # The router answers a failure of the registration with the matching error.
    return pending.addCallback(lambda _: conn.iq_result(iq))


def apply_form(conn: Any, room: RoomView, values: dict[str, list[str]]) -> Deferred | None:
    """Apply the submitted fields; returns a Deferred when the registration changes."""
    changes: list[ModeItem] = []
    for var, (flag, when_set) in FLAG_FIELDS.items():
        if var in values:
            wanted = _truth(values[var]) == when_set
            if wanted != (flag in room.flags):
                changes.append(ModeItem(wanted, flag))
    changes.extend(_key_changes(room, values))
    changes.extend(_limit_changes(room, values))
    if changes:
        _applied, errors = conn.service.set_mode(conn.core, room.name, changes)
        if errors:
            raise errors[0]
    if F + "roomname" in values:
        set_display_name(room, (values[F + "roomname"] or [""])[0])
    desc = values.get(F + "roomdesc")
    if desc is not None and (desc[0] if desc else "") != room.topic:
        conn.service.set_topic(conn.core, room.name, desc[0] if desc else "")
    persistent = values.get(F + "persistentroom")
    if persistent is not None and _truth(persistent) != room.registered:
        if _truth(persistent):
            return conn.service.register_room(conn.core, room.name)
        return conn.service.drop_room(conn.core, room.name)
    return None


def _key_changes(room: RoomView, values: dict[str, list[str]]) -> list[ModeItem]:
    protected = values.get(F + "passwordprotectedroom")
    secret = values.get(F + "roomsecret")
    if protected is None and secret is None:
        return []
    secret_text = secret[0] if secret else ""
    if protected is None:
        # A form may carry the secret alone: then a secret means a protected room.
        protected = ["1" if secret_text else "0"]
    if not _truth(protected):
        return [ModeItem(False, "key")] if room.key is not None else []
    if not secret_text:
        if room.key is None:
            raise StanzaError("not-acceptable", "a password-protected room needs a password")
        return []
    if secret_text != room.key:
        return [ModeItem(True, "key", secret_text)]
    return []


def _limit_changes(room: RoomView, values: dict[str, list[str]]) -> list[ModeItem]:
    maxusers = values.get(F + "maxusers")
    if not maxusers:
        return []
    value = maxusers[0].strip()
    if value in ("", "none", "0"):
        return [ModeItem(False, "limit")] if room.limit is not None else []
    if not (value.isascii() and value.isdigit()):
        raise StanzaError("not-acceptable", "maximum occupants must be a number")
    return [ModeItem(True, "limit", value)] if int(value) != room.limit else []
