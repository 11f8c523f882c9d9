"""What an XMPP occupant's presence carries besides its state: the client's own extensions.

A client's presence to a room holds more than show and status: its entity capabilities
(XEP-0115 ``<c/>``, which other clients use to learn what it supports), its avatar hash
(XEP-0153), and whatever else it chose to say.  As Prosody does, every other occupant sees
those children in the occupant's presence.  The server's own parts (``muc``, ``muc#user``,
``occupant-id``) and the core's state (show and status: the user may be on IRC as well) are
built afresh; only the rest is kept, serialized, per user and room.

Kept while the user has an XMPP connection: a user now only on IRC or line chat announces no
client's capabilities.
"""

from __future__ import annotations

import copy
from typing import Any
from weakref import WeakKeyDictionary

from lxml import etree

from chatserver.core.views import UserView
from protocols.xmpp import avatar_hash
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element
from protocols.xmpp.stanzas import element, to_bytes

# Built by the server, never taken from the client.
_OWN = frozenset({ns.MUC, ns.MUC_USER, ns.OCCUPANT_ID, ns.DELAY})
# Per user: room key -> the children, serialized; weakly keyed, so it goes with the user.
_extras: WeakKeyDictionary[UserView, dict[str, bytes]] = WeakKeyDictionary()
# At most this much of a client's extensions is repeated to every occupant.
MAX_BYTES = 8192


def kept(conn: Any, pres: Element) -> bytes:
    """The children of a client's presence to a room that occupants see, serialized."""
    holder = element("presence")
    for child in pres:
        if not isinstance(child.tag, str):
            continue
        namespace = etree.QName(child).namespace
        # No namespace: show, status and priority (stanzas lose jabber:client on parsing).
        if namespace is None or namespace in _OWN:
            continue
        kept_child = copy.deepcopy(child)
        kept_child.tail = None
        holder.append(kept_child)
    factory = getattr(conn, "factory", None)
    account = conn.user.account if conn.user is not None else None
    if factory is not None and account is not None:
        avatar_hash.inject(factory, account, holder)
    data = b"".join(to_bytes(child) for child in holder)
    return data if len(data) <= MAX_BYTES else b""


def remember(user: UserView, room: str, data: bytes) -> bool:
    """Keep what ``user``'s client says in ``room``; True if that changed."""
    per_room = _extras.get(user)
    if per_room is None:
        per_room = _extras[user] = {}
    if per_room.get(room) == data:
        return False
    if len(per_room) > len(user.rooms) + 8:
        for name in [n for n in per_room if n not in user.rooms]:
            del per_room[name]
    per_room[room] = data
    return True


def of(user: UserView | None, room: str) -> bytes:
    """What ``user``'s occupant presence in ``room`` carries past its state ("" for none)."""
    if user is None:
        return b""
    per_room = _extras.get(user)
    if not per_room:
        return b""
    data = per_room.get(room, b"")
    if data and not any(c.protocol == "xmpp" for c in user.connections):
        return b""
    return data


def append(pres: Element, data: bytes) -> None:
    """Add kept children to a presence being built."""
    if data:
        for child in etree.fromstring(b"<x>" + data + b"</x>"):
            pres.append(child)
