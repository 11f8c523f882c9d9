"""Occupant presences: what every occupant sees of another (and of itself, with status 110).

The room is non-anonymous: every user's JID (``nick@domain``) is public anyway, so each item
carries it and the room advertises ``muc_nonanonymous``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from chatserver.core.events import Who
from chatserver.core.views import MemberView, RoomView, UserView
from protocols.xmpp.muc import extras, ns
from protocols.xmpp.muc.build import Element, tail
from protocols.xmpp.muc.occupants import affiliation, occupant_id, role
from protocols.xmpp.stanzas import element, sub

# What a joiner is shown of each occupant, per user and room, with the state it was made from:
# a busy room's joiners all get the same presences, so each is serialized again only when the
# occupant's status, the room's moderation or its registration changes.  Keyed weakly by the
# user, so the entries go when the user does.
_shown: WeakKeyDictionary[UserView, dict[str, tuple[tuple[Any, ...], bytes]]] = WeakKeyDictionary()


def occupant_tail(conn: Any, room: RoomView, user: UserView, member: MemberView) -> bytes:
    """An occupant's presence, for splicing, as every other occupant sees it."""
    who = user.who()
    kept = extras.of(user, room.name)
    state = (room, who, member.op, member.voice, "moderated" in room.flags, room.owner, kept)
    per_room = _shown.get(user)
    if per_room is None:
        per_room = _shown[user] = {}
    hit = per_room.get(room.name)
    if hit is not None and hit[0] == state:
        return hit[1]
    if len(per_room) > len(user.rooms) + 8:
        # Rooms the user has left since: keep only those it is in.
        for name in [n for n in per_room if n not in user.rooms]:
            del per_room[name]
    data = tail(presence_of(conn, room, who, member))
    per_room[room.name] = (state, data)
    return data


def presence_of(
    conn: Any,
    room: RoomView,
    who: Who,
    member: MemberView | None,
    *,
    unavailable: bool = False,
    outcast: bool = False,
    **details: Any,
) -> Element:
    """The presence of ``who`` in ``room`` (``member`` None once they have left)."""
    return occupant_presence(
        conn,
        room.name,
        who,
        role_="none" if unavailable else role(room, member),
        affiliation_="outcast" if outcast else affiliation(room, who, member),
        unavailable=unavailable,
        **details,
    )


def occupant_presence(
    conn: Any,
    room_name: str,
    who: Who,
    *,
    role_: str,
    affiliation_: str,
    unavailable: bool = False,
    codes: Iterable[str] = (),
    new_nick: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    status: str | None = None,
) -> Element:
    pres = element(
        "presence",
        {
            "from": conn.occupant_jid(room_name, who.nick),
            "type": "unavailable" if unavailable else None,
        },
    )
    if not unavailable and who.away is not None:
        sub(pres, "show", text="away")
        if who.away:
            sub(pres, "status", text=who.away)
    elif status:
        sub(pres, "status", text=status)
    if not unavailable:
        # The client's own extensions (capabilities, avatar hash, …) as it sent them.
        extras.append(pres, extras.of(conn.service.find_user(who.nick), room_name))
    x = sub(pres, "x", ns=ns.MUC_USER)
    attrs = {"affiliation": affiliation_, "role": role_, "jid": conn.jid_of(who), "nick": new_nick}
    item = sub(x, "item", attrs)
    if actor is not None:
        sub(item, "actor", {"nick": actor})
    if reason:
        sub(item, "reason", text=reason)
    for code in codes:
        sub(x, "status", {"code": code})
    sub(pres, "occupant-id", {"id": occupant_id(conn, room_name, who)}, ns=ns.OCCUPANT_ID)
    return pres
